//! What one model version has done since it loaded, for the Open Inference Protocol's
//! ModelStatistics: counts and summed durations in atomics, so that recording a request
//! takes no lock (a model call takes one, to count its size).

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

/// How many times something happened and how long it took in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub nanos: u64,
}

#[derive(Default)]
struct Counter {
    count: AtomicU64,
    nanos: AtomicU64,
}

fn nanos(took: Duration) -> u64 {
    u64::try_from(took.as_nanos()).unwrap_or(u64::MAX)
}

impl Counter {
    fn add(&self, took: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add(nanos(took), Ordering::Relaxed);
    }

    fn read(&self) -> Tally {
        Tally { count: self.count.load(Ordering::Relaxed), nanos: self.nanos.load(Ordering::Relaxed) }
    }
}

/// A request's time in the model's queues and calls (the longest part's, for a request
/// run in parts on several sessions at once).
#[derive(Debug, Clone, Copy, Default)]
pub struct CallTimes {
    pub queued: Duration,
    pub computed: Duration,
}

impl CallTimes {
    pub fn longest(self, other: Self) -> Self {
        Self { queued: self.queued.max(other.queued), computed: self.computed.max(other.computed) }
    }
}

#[derive(Default)]
pub struct Statistics {
    succeeded: Counter,
    failed: Counter,
    queued: Counter,
    computed: Counter,
    frames_answered: AtomicU64,
    calls: AtomicU64,
    last_call_ms: AtomicU64,
    /// Calls by their frames: as many entries as sizes that ran, at most the model's
    /// largest call.
    calls_by_frames: Mutex<BTreeMap<usize, Tally>>,
}

/// A copy of [`Statistics`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatisticsSnapshot {
    pub succeeded: Tally,
    pub failed: Tally,
    pub queued: Tally,
    pub computed: Tally,
    /// Frames of successful requests (each frame of a batch is one inference).
    pub frames_answered: u64,
    /// Model calls, rollout steps included.
    pub calls: u64,
    /// When the last call ran, in milliseconds since the Unix epoch; 0 before the first.
    pub last_call_ms: u64,
    /// (frames, calls of that many frames), for sizes that ran.
    pub calls_by_frames: Vec<(usize, Tally)>,
}

impl Statistics {
    /// One model call of `frames` frames that took `took`.
    pub fn call(&self, frames: usize, took: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        self.last_call_ms.fetch_max(u64::try_from(now.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
        let mut by_frames = self.calls_by_frames.lock().unwrap_or_else(|e| e.into_inner());
        let tally = by_frames.entry(frames).or_default();
        tally.count += 1;
        tally.nanos = tally.nanos.saturating_add(nanos(took));
    }

    /// A request of `frames` frames answered `took` after it arrived.
    pub fn answered(&self, frames: usize, took: Duration, times: CallTimes) {
        self.succeeded.add(took);
        self.queued.add(times.queued);
        self.computed.add(times.computed);
        self.frames_answered.fetch_add(frames as u64, Ordering::Relaxed);
    }

    /// A rollout that ran to its end `took` after it arrived: one request, and an
    /// inference per system and step.
    pub fn rollout_finished(&self, inferences: u64, took: Duration) {
        self.succeeded.add(took);
        self.frames_answered.fetch_add(inferences, Ordering::Relaxed);
    }

    /// A request that failed (turned away, or the model call failed) `took` after it arrived.
    pub fn failed(&self, took: Duration) {
        self.failed.add(took);
    }

    pub fn snapshot(&self) -> StatisticsSnapshot {
        StatisticsSnapshot {
            succeeded: self.succeeded.read(),
            failed: self.failed.read(),
            queued: self.queued.read(),
            computed: self.computed.read(),
            frames_answered: self.frames_answered.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
            last_call_ms: self.last_call_ms.load(Ordering::Relaxed),
            calls_by_frames: self.calls_by_frames.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(frames, tally)| (*frames, *tally)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_calls_add_up() {
        let statistics = Statistics::default();
        let ms = Duration::from_millis;
        statistics.call(3, ms(2));
        statistics.call(3, ms(4));
        statistics.call(8, ms(1));
        statistics.answered(3, ms(10), CallTimes { queued: ms(1), computed: ms(2) }.longest(CallTimes { queued: ms(3), computed: ms(1) }));
        statistics.answered(5, ms(20), CallTimes { queued: ms(0), computed: ms(4) });
        statistics.failed(ms(7));
        let snapshot = statistics.snapshot();
        assert_eq!(snapshot.calls, 3);
        assert_eq!(snapshot.calls_by_frames, vec![(3, Tally { count: 2, nanos: 6_000_000 }), (8, Tally { count: 1, nanos: 1_000_000 })]);
        assert_eq!(snapshot.succeeded, Tally { count: 2, nanos: 30_000_000 });
        assert_eq!(snapshot.queued, Tally { count: 2, nanos: 3_000_000 });
        assert_eq!(snapshot.computed, Tally { count: 2, nanos: 6_000_000 });
        assert_eq!(snapshot.failed, Tally { count: 1, nanos: 7_000_000 });
        assert_eq!(snapshot.frames_answered, 8);
        let now_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").as_millis() as u64;
        assert!(snapshot.last_call_ms <= now_ms && now_ms - snapshot.last_call_ms < 60_000, "{}", snapshot.last_call_ms);
    }
}
