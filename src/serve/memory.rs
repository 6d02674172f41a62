//! Memory as the server's scarce resource: what one frame of a model costs, measured
//! when the model loads, and one budget that every model call reserves from before it
//! runs. A call's frames are capped so that it fits the budget alone; calls that do not
//! fit beside the ones running wait for them (the queues in front are bounded).

use std::{
    fs,
    sync::{Condvar, Mutex, PoisonError},
};

/// Bytes all model calls together may hold at once.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    in_use: Mutex<u64>,
    freed: Condvar,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Self {
        Self { limit: limit.max(1), in_use: Mutex::new(0), freed: Condvar::new() }
    }

    /// Half of the memory this process may use: the cgroup's limit when one is set
    /// (a container), else the machine's; 4 GiB when neither can be read.
    pub fn default_limit() -> u64 {
        let machine = fs::read_to_string("/proc/meminfo").ok().and_then(|text| kib_field(&text, "MemTotal:")).map(|kib| kib * 1024);
        let cgroup = fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|text| text.trim().parse::<u64>().ok());
        let usable = match (machine, cgroup) {
            (Some(machine), Some(cgroup)) => machine.min(cgroup),
            (Some(bytes), None) | (None, Some(bytes)) => bytes,
            (None, None) => 8 << 30,
        };
        usable / 2
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Waits until `bytes` (at most the limit) fit beside what is reserved, and holds
    /// them until the reservation is dropped.
    pub(crate) fn reserve(&self, bytes: u64) -> Reservation<'_> {
        let bytes = bytes.min(self.limit);
        let mut in_use = self.in_use.lock().unwrap_or_else(PoisonError::into_inner);
        while *in_use + bytes > self.limit {
            in_use = self.freed.wait(in_use).unwrap_or_else(PoisonError::into_inner);
        }
        *in_use += bytes;
        Reservation { budget: self, bytes }
    }
}

/// Bytes of the budget held by one running call.
pub(crate) struct Reservation<'a> {
    budget: &'a MemoryBudget,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut in_use = self.budget.in_use.lock().unwrap_or_else(PoisonError::into_inner);
        *in_use -= self.bytes;
        self.budget.freed.notify_all();
    }
}

/// A size as typed: bytes, or with a unit (`512MiB`, `8GiB`, `1.5G`; powers of 1024).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        "t" | "tib" | "tb" => 1 << 40,
        _ => return Err(format!("'{text}': unknown unit '{unit}' (use B, KiB, MiB, GiB or TiB)")),
    };
    let value: f64 = number.trim().parse().map_err(|_| format!("'{text}': expected a size such as 8GiB or 512MiB"))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("'{text}': a size must be positive"));
    }
    Ok((value * scale as f64) as u64)
}

fn kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix(field)).and_then(|rest| rest.split_whitespace().next()).and_then(|kib| kib.parse().ok())
}

/// Hands memory ONNX Runtime freed back to the system. Its kernels allocate through the
/// C library, whose allocator keeps freed blocks for reuse: after one large batch the
/// process would stay at its peak.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The process's resident memory and its peak since the last [`reset_peak`], bytes
/// (Linux; `None` elsewhere).
pub fn resident_and_peak() -> Option<(u64, u64)> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    Some((kib_field(&status, "VmRSS:")? * 1024, kib_field(&status, "VmHWM:")? * 1024))
}

/// Starts a new peak: the kernel resets VmHWM to the current RSS.
pub fn reset_peak() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Bytes per frame that `run` adds to the process's peak when it runs `frames` frames:
/// the peak it reaches above the memory resident before, divided by the frames. `None`
/// where the peak cannot be read or reset.
pub fn peak_per_frame(frames: usize, run: impl FnOnce()) -> Option<u64> {
    // Freed blocks the allocator kept would be reused unseen by the peak.
    return_freed_memory();
    if !reset_peak() {
        return None;
    }
    let (before, _) = resident_and_peak()?;
    run();
    let (_, peak) = resident_and_peak()?;
    Some(peak.saturating_sub(before) / frames.max(1) as u64)
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicU64, Ordering},
        },
        thread,
    };

    use super::*;

    #[test]
    fn reservations_never_exceed_the_budget() {
        let budget = Arc::new(MemoryBudget::new(100));
        let (held, most) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (budget, held, most) = (Arc::clone(&budget), Arc::clone(&held), Arc::clone(&most));
                thread::spawn(move || {
                    for _ in 0..200 {
                        let bytes = 30 + 10 * (i % 3);
                        let _reservation = budget.reserve(bytes);
                        let now = held.fetch_add(bytes, Ordering::SeqCst) + bytes;
                        most.fetch_max(now, Ordering::SeqCst);
                        held.fetch_sub(bytes, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no panic");
        }
        assert!(most.load(Ordering::SeqCst) <= 100, "{}", most.load(Ordering::SeqCst));
        // More than the whole budget is clamped to it rather than waiting forever.
        drop(budget.reserve(1_000));
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("8 parsecs").expect_err("unit").contains("unknown unit"));
        assert!(parse_bytes("-1GiB").is_err());
        assert!(parse_bytes("GiB").is_err());
    }

    #[test]
    fn a_large_allocation_shows_in_the_peak() {
        // Fresh pages from the system (an allocator could hand out memory it already holds).
        let touch_fresh_pages = || {
            let size = 64 << 20;
            // SAFETY: an anonymous private mapping of `size` bytes, written within its bounds, then unmapped.
            unsafe {
                let block = libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
                assert_ne!(block, libc::MAP_FAILED);
                std::ptr::write_bytes(block.cast::<u8>(), 1, size);
                libc::munmap(block, size);
            }
        };
        let Some(per_frame) = peak_per_frame(4, touch_fresh_pages) else {
            eprintln!("SKIPPED: this system does not let a process reset its peak RSS");
            return;
        };
        assert!(per_frame >= 15 << 20, "{per_frame} bytes per frame for 64 MiB over 4 frames");
    }
}
