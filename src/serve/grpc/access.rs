//! What every call passes through before and after its service: bearer tokens (health
//! and the protocol's liveness and readiness stay open for probes), repository changes
//! refused to callers nobody authenticated unless the operator allowed it, and the
//! status code of a request too large to read.

use std::{
    collections::HashMap,
    fs,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{
    Code, Status,
    codegen::http::{HeaderValue, Request, Response},
};
use tower_layer::Layer;
use tower_service::Service;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Predict, Rollout, and reading models and cards.
    Inference,
    /// Everything, including managing models.
    Admin,
}

/// Tokens and their roles, from a file of `ROLE TOKEN` lines (`inference` or `admin`;
/// blank lines and `#` comments ignored).
#[derive(Clone)]
pub struct AccessTokens(Arc<HashMap<String, Role>>);

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessTokens({} tokens)", self.0.len())
    }
}

/// Shortest token accepted: a guessable one protects nothing.
const MIN_TOKEN_LEN: usize = 16;

impl AccessTokens {
    /// Warns when others than its owner may read the file: its tokens are secrets.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let tokens = Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(mode) = others_may_read(path) {
            tracing::warn!(file = %path.display(), mode = format!("{mode:o}"), "the token file can be read by others than its owner (chmod 600 it)");
        }
        Ok(tokens)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = HashMap::new();
        for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (role, token) = line.split_once(char::is_whitespace).ok_or_else(|| format!("line {number}: expected ROLE TOKEN"))?;
            let role = match role {
                "inference" => Role::Inference,
                "admin" => Role::Admin,
                other => return Err(format!("line {number}: unknown role '{other}' (inference or admin)")),
            };
            let token = token.trim();
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!("line {number}: a token must have at least {MIN_TOKEN_LEN} characters"));
            }
            tokens.insert(token.to_string(), role);
        }
        if tokens.is_empty() {
            return Err("no tokens".into());
        }
        Ok(Self(Arc::new(tokens)))
    }

    /// Whether an `authorization` header carries one of our tokens, of any role.
    pub fn admits(&self, header: Option<&HeaderValue>) -> bool {
        self.role(header).is_some()
    }

    /// The role of the bearer token in an `authorization` header, if it is one of ours.
    pub fn role(&self, header: Option<&HeaderValue>) -> Option<Role> {
        let token = header?.to_str().ok()?.strip_prefix("Bearer ")?;
        // Every known token is compared in full, so that timing does not tell how much of one matched.
        self.0.iter().fold(None, |found, (known, role)| if constant_time_eq(known.as_bytes(), token.as_bytes()) { Some(*role) } else { found })
    }
}

/// The file's permission bits when its group or others may read it.
fn others_may_read(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The role a call needs, by its gRPC path; `None` for calls open to all (health).
fn required_role(path: &str) -> Option<Role> {
    let mut parts = path.split('/').skip(1);
    match (parts.next(), parts.next()) {
        (Some("grpc.health.v1.Health"), _) => None,
        // The protocol's own probes, as KServe's and Triton's deployments call them.
        (Some("inference.GRPCInferenceService"), Some("ServerLive" | "ServerReady" | "ModelReady")) => None,
        (Some("equiserve.v1.Dynamics"), _) => Some(Role::Inference),
        // The Open Inference Protocol: changing the repository is for admins.
        (Some("inference.GRPCInferenceService"), Some(method)) if method.starts_with("Repository") && method != "RepositoryIndex" => Some(Role::Admin),
        (Some("inference.GRPCInferenceService"), _) => Some(Role::Inference),
        // Reflection and anything added later: inference tokens may read, admin do all.
        (Some(service), _) if service.starts_with("grpc.reflection.") => Some(Role::Inference),
        _ => Some(Role::Admin),
    }
}

/// Whether a call loads or unloads models.
fn changes_repository(path: &str) -> bool {
    matches!(path, "/inference.GRPCInferenceService/RepositoryModelLoad" | "/inference.GRPCInferenceService/RepositoryModelUnload")
}

/// The layer around every service of the server.
#[derive(Debug, Clone, Default)]
pub struct AccessLayer {
    tokens: Option<AccessTokens>,
    unauthenticated_admin: bool,
}

impl AccessLayer {
    /// With no tokens, repository changes are refused unless `unauthenticated_admin`
    /// (the operator's --allow-unauthenticated-admin, or a repository that cannot change).
    pub fn new(tokens: Option<AccessTokens>, unauthenticated_admin: bool) -> Self {
        Self { tokens, unauthenticated_admin }
    }
}

impl<S> Layer<S> for AccessLayer {
    type Service = Access<S>;

    fn layer(&self, inner: S) -> Access<S> {
        Access { inner, tokens: self.tokens.clone(), unauthenticated_admin: self.unauthenticated_admin }
    }
}

#[derive(Debug, Clone)]
pub struct Access<S> {
    inner: S,
    tokens: Option<AccessTokens>,
    unauthenticated_admin: bool,
}

impl<S> Access<S> {
    /// Why the call may not go on, if it may not.
    fn refusal(&self, path: &str, authorization: Option<&HeaderValue>) -> Option<Status> {
        let Some(tokens) = &self.tokens else {
            return (changes_repository(path) && !self.unauthenticated_admin).then(|| {
                Status::permission_denied(
                    "loading and unloading models needs an admin token: start the server with --auth-token-file \
                     (or, on a network you trust, --allow-unauthenticated-admin)",
                )
            });
        };
        match (required_role(path)?, tokens.role(authorization)) {
            (_, None) => Some(Status::unauthenticated("send a valid token as 'authorization: Bearer TOKEN'")),
            (Role::Admin, Some(Role::Inference)) => Some(Status::permission_denied("this call needs an admin token")),
            _ => None,
        }
    }
}

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for Access<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: Default + Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        if let Some(status) = self.refusal(request.uri().path(), request.headers().get("authorization")) {
            let (parts, ()) = status.into_http::<()>().into_parts();
            return Box::pin(async move { Ok(Response::from_parts(parts, ResponseBody::default())) });
        }
        let path = request.uri().path().to_string();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            resource_exhausted_for_oversize(&mut response);
            say_what_is_not_served(&mut response, &path);
            Ok(response)
        })
    }
}

/// tonic answers a request over the size limit with OUT_OF_RANGE; gRPC's status code
/// conventions say RESOURCE_EXHAUSTED (a limit of the server, not a range of the API).
fn resource_exhausted_for_oversize<B>(response: &mut Response<B>) {
    let headers = response.headers();
    let out_of_range = headers.get("grpc-status").is_some_and(|code| code.as_bytes() == (Code::OutOfRange as i32).to_string().as_bytes());
    let oversize = headers
        .get("grpc-message")
        .and_then(|message| message.to_str().ok())
        .is_some_and(|message| message.starts_with("Error,%20decoded%20message%20length%20too%20large"));
    if out_of_range && oversize {
        response.headers_mut().insert("grpc-status", HeaderValue::from(Code::ResourceExhausted as i32));
    }
}

/// tonic answers a call to a method it does not serve with UNIMPLEMENTED and no
/// message; the caller is told which call and what is served instead.
fn say_what_is_not_served<B>(response: &mut Response<B>, path: &str) {
    let headers = response.headers();
    let unimplemented = headers.get("grpc-status").is_some_and(|code| code.as_bytes() == (Code::Unimplemented as i32).to_string().as_bytes());
    if !unimplemented || headers.get("grpc-message").is_some_and(|message| !message.is_empty()) {
        return;
    }
    // grpc-message is percent-encoded: keep to printable ASCII without '%'.
    let path: String = path.chars().take(128).filter(|c| c.is_ascii_graphic() && *c != '%').collect();
    let message = format!(
        "{path} is not served here; equiserve serves equiserve.v1.Dynamics, inference.GRPCInferenceService (the Open Inference Protocol \
         without shared memory, trace and log settings), grpc.health.v1.Health and server reflection"
    );
    if let Ok(value) = HeaderValue::from_str(&message) {
        response.headers_mut().insert("grpc-message", value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_name_roles_and_refuse_weak_tokens() {
        let tokens = AccessTokens::parse("# who may call\ninference 0123456789abcdef\n\nadmin fedcba9876543210\n").expect("parses");
        let bearer = |token: &str| HeaderValue::from_str(&format!("Bearer {token}")).ok();
        assert_eq!(tokens.role(bearer("0123456789abcdef").as_ref()), Some(Role::Inference));
        assert_eq!(tokens.role(bearer("fedcba9876543210").as_ref()), Some(Role::Admin));
        assert_eq!(tokens.role(bearer("0123456789abcdeX").as_ref()), None);
        assert_eq!(tokens.role(None), None);
        assert!(AccessTokens::parse("inference short").expect_err("weak").contains("at least 16"));
        assert!(AccessTokens::parse("root 0123456789abcdef").expect_err("role").contains("unknown role 'root'"));
        assert!(AccessTokens::parse("# nothing\n").expect_err("empty").contains("no tokens"));
    }

    #[test]
    fn health_is_open_and_the_api_needs_a_token() {
        assert_eq!(required_role("/grpc.health.v1.Health/Check"), None);
        assert_eq!(required_role("/equiserve.v1.Dynamics/Predict"), Some(Role::Inference));
        assert_eq!(required_role("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), Some(Role::Inference));
        assert_eq!(required_role("/something.Else/Call"), Some(Role::Admin));
        assert_eq!(required_role("/inference.GRPCInferenceService/ModelInfer"), Some(Role::Inference));
        assert_eq!(required_role("/inference.GRPCInferenceService/RepositoryIndex"), Some(Role::Inference));
        assert_eq!(required_role("/inference.GRPCInferenceService/RepositoryModelLoad"), Some(Role::Admin));
        assert_eq!(required_role("/inference.GRPCInferenceService/RepositoryModelUnload"), Some(Role::Admin));
        for probe in ["ServerLive", "ServerReady", "ModelReady"] {
            assert_eq!(required_role(&format!("/inference.GRPCInferenceService/{probe}")), None, "{probe}");
        }
        assert_eq!(required_role("/inference.GRPCInferenceService/ModelMetadata"), Some(Role::Inference));
    }

    #[test]
    fn without_tokens_only_an_allowed_operator_opens_the_repository_to_all() {
        let load = "/inference.GRPCInferenceService/RepositoryModelLoad";
        let guarded = Access { inner: (), tokens: None, unauthenticated_admin: false };
        let refusal = guarded.refusal(load, None).expect("refused");
        assert_eq!(refusal.code(), Code::PermissionDenied);
        assert!(refusal.message().contains("--auth-token-file") && refusal.message().contains("--allow-unauthenticated-admin"), "{}", refusal.message());
        assert!(guarded.refusal("/inference.GRPCInferenceService/RepositoryModelUnload", None).is_some());
        for open in ["/inference.GRPCInferenceService/ModelInfer", "/inference.GRPCInferenceService/RepositoryIndex", "/equiserve.v1.Dynamics/Predict"] {
            assert!(guarded.refusal(open, None).is_none(), "{open}");
        }
        let allowed = Access { inner: (), tokens: None, unauthenticated_admin: true };
        assert!(allowed.refusal(load, None).is_none());
        let tokens = AccessTokens::parse("admin fedcba9876543210\ninference 0123456789abcdef").expect("parses");
        let with_tokens = Access { inner: (), tokens: Some(tokens), unauthenticated_admin: false };
        let bearer = |token: &str| HeaderValue::from_str(&format!("Bearer {token}")).expect("header");
        assert!(with_tokens.refusal(load, Some(&bearer("fedcba9876543210"))).is_none());
        assert_eq!(with_tokens.refusal(load, Some(&bearer("0123456789abcdef"))).map(|s| s.code()), Some(Code::PermissionDenied));
        assert_eq!(with_tokens.refusal("/inference.GRPCInferenceService/ServerReady", None).map(|s| s.code()), None, "probes need no token");
    }

    #[test]
    fn a_token_file_others_can_read_is_noticed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokens");
        fs::write(&path, "admin fedcba9876543210\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(others_may_read(&path), Some(0o644));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(others_may_read(&path), None);
        assert!(AccessTokens::from_file(&path).is_ok());
    }
}
