"""Validates deploy/ with what can run without a cluster.

Usage: validate.py PROJECT_DIR EQUISERVE_HELP_FILE

- Kubernetes built-in kinds (Deployment, Service, HorizontalPodAutoscaler): the
  kubernetes-validate package's schemas, strict (unknown fields are errors).
- KServe's ServingRuntime and InferenceService: the openAPIV3Schema of KServe's own CRDs
  (tests/fixtures/kserve, see its README), made strict the way `kubectl apply
  --validate=strict` is: a field a schema does not list is an error.
- Every equiserve flag and EQUISERVE_* variable the manifests and Dockerfiles set is one
  `equiserve --help` lists.
"""

import copy
import gzip
import pathlib
import re
import sys

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.33.0"
project, help_text = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]).read_text()
failures = []


def strict(schema):
    """Unknown fields become errors where the schema lists its fields."""
    schema = copy.deepcopy(schema)
    stack = [schema]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for key, value in node.items():
            if key in ("properties", "definitions"):
                stack.extend(value.values())
            elif isinstance(value, dict):
                stack.append(value)
            elif isinstance(value, list):
                stack.extend(v for v in value if isinstance(v, dict))
    return schema


def crd_schemas():
    schemas = {}
    for path in sorted((project / "tests/fixtures/kserve").glob("*.yaml.gz")):
        crd = yaml.safe_load(gzip.decompress(path.read_bytes()))
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            api = f"{crd['spec']['group']}/{version['name']}"
            schema = strict(version["schema"]["openAPIV3Schema"])
            # Metadata is checked by the API server, not by the CRD's schema.
            schema["properties"]["metadata"] = {"type": "object"}
            schemas[(api, kind)] = schema
    return schemas


def check_flags(where, args, env_names):
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and not re.search(rf"(^|\s){re.escape(flag)}[\s<=]", help_text, re.M):
            failures.append(f"{where}: equiserve has no flag {flag}")
    for name in env_names:
        if f"env: {name}=" not in help_text and f"env: {name}]" not in help_text:
            failures.append(f"{where}: equiserve reads no variable {name}")


crds = crd_schemas()
checked = []
for path in sorted((project / "deploy").rglob("*.yaml")):
    for number, document in enumerate(yaml.safe_load_all(path.read_text())):
        if not document:
            continue
        where = f"{path.relative_to(project)} document {number + 1} ({document.get('kind')})"
        key = (document.get("apiVersion"), document.get("kind"))
        if key in crds:
            errors = sorted(jsonschema.Draft7Validator(crds[key]).iter_errors(document), key=lambda e: list(e.path))
            failures.extend(f"{where}: {'.'.join(map(str, e.path))}: {e.message}" for e in errors)
        else:
            try:
                kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                failures.append(f"{where}: {'.'.join(map(str, e.path))}: {e.message}")
            except kubernetes_validate.utils.SchemaNotFoundError as e:
                failures.append(f"{where}: no schema: {e}")
        checked.append(where)
        pod = document.get("spec", {}).get("template", {}).get("spec", document.get("spec", {}))
        for container in pod.get("containers", []):
            if container.get("image", "").startswith("equiserve"):
                check_flags(where, container.get("args", []), [e["name"] for e in container.get("env", [])])

for dockerfile in sorted(project.glob("Dockerfile*")):
    text = dockerfile.read_text()
    names = [name for line in re.findall(r"^ENV (.*)$", text, re.M) for name in re.findall(r"(EQUISERVE_[A-Z_]+)=", line)]
    entrypoint = re.search(r'^ENTRYPOINT \["/app/equiserve"(.*)\]$', text, re.M)
    if not entrypoint:
        failures.append(f"{dockerfile.name}: the entrypoint is not /app/equiserve")
    args = re.findall(r'"([^"]+)"', entrypoint.group(1)) if entrypoint else []
    check_flags(dockerfile.name, args, names)
    checked.append(dockerfile.name)

for line in checked:
    print(f"checked: {line}")
if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print(f"deploy: {len(checked)} manifests and Dockerfiles valid")
