//! Admission control: the server answers `ThrottlingException` (HTTP 400, as AWS does) instead of
//! queueing without bound when it is saturated (too many requests in flight) or when an account
//! exceeds its configured request rate. Rejected requests cost almost nothing, so memory stays
//! flat under overload.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::aws_error::AwsJsonError;

/// Limits shared by all HTTP workers.
pub struct Admission {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    /// Bytes of request bodies received and not yet admitted or refused, across connections:
    /// bodies are read before the caller is known, so nothing else bounds them.
    bodies: Arc<Semaphore>,
    body_budget: usize,
    per_account: Option<DefaultKeyedRateLimiter<String>>,
    /// Requests seen by the per-account limiter, to forget idle accounts now and then.
    checked: AtomicU64,
}

/// Bytes of request bodies held before admission, unless configured (`max_body_buffer_bytes`).
pub const DEFAULT_BODY_BUDGET: usize = 64 << 20;

/// Every this many requests, the per-account limiter forgets the accounts whose budget is full
/// again: otherwise each access key ever seen (permissive mode makes any 12 digits an account)
/// would keep an entry for the life of the process.
const FORGET_IDLE_EVERY: u64 = 4_096;

impl Admission {
    /// `max_in_flight` requests at once; `per_account_per_sec` requests per second and account
    /// (0: unlimited), with bursts of the same size.
    pub fn new(max_in_flight: usize, per_account_per_sec: u32) -> Self {
        let per_account = NonZeroU32::new(per_account_per_sec).map(|rate| RateLimiter::keyed(Quota::per_second(rate)));
        Admission {
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            max_in_flight: max_in_flight.max(1),
            bodies: Arc::new(Semaphore::new(DEFAULT_BODY_BUDGET)),
            body_budget: DEFAULT_BODY_BUDGET,
            per_account,
            checked: AtomicU64::new(0),
        }
    }

    /// At most `bytes` of request bodies held at once before admission.
    pub fn with_body_budget(mut self, bytes: usize) -> Self {
        let bytes = bytes.clamp(1, Semaphore::MAX_PERMITS);
        self.bodies = Arc::new(Semaphore::new(bytes));
        self.body_budget = bytes;
        self
    }

    /// Takes `bytes` more of the body budget into `held` (the bytes a body read so far holds),
    /// or the throttling error when bodies being received hold it all already.
    pub fn hold_body_bytes(&self, held: &mut Option<OwnedSemaphorePermit>, bytes: usize) -> Result<(), AwsJsonError> {
        let refused = || {
            metrics::counter!(crate::telemetry::THROTTLED, "cause" => "body-bytes").increment(1);
            AwsJsonError::throttling(format!(
                "the service is receiving {} bytes of request bodies already; retry later",
                self.body_budget
            ))
        };
        let more = u32::try_from(bytes).map_err(|_| refused())?;
        let permit = self.bodies.clone().try_acquire_many_owned(more).map_err(|_| refused())?;
        match held {
            Some(held) => held.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }

    /// A permit to run one request (dropped when its response is built), or the throttling error.
    pub fn admit(&self, account: &str) -> Result<OwnedSemaphorePermit, AwsJsonError> {
        if let Some(limiter) = &self.per_account {
            if self.checked.fetch_add(1, Ordering::Relaxed) % FORGET_IDLE_EVERY == FORGET_IDLE_EVERY - 1 {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
            if limiter.check_key(&account.to_string()).is_err() {
                metrics::counter!(crate::telemetry::THROTTLED, "cause" => "account-rate").increment(1);
                return Err(AwsJsonError::throttling(format!(
                    "account {account} exceeds its request rate; retry later"
                )));
            }
        }
        self.in_flight.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!(crate::telemetry::THROTTLED, "cause" => "in-flight").increment(1);
            AwsJsonError::throttling(format!(
                "the service is handling {} requests already; retry later",
                self.max_in_flight
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_seen_once_are_forgotten_once_their_budget_is_full_again() {
        let admission = Admission::new(1, 1_000);
        let remembered = || admission.per_account.as_ref().map_or(0, |l| l.len());
        for i in 0..FORGET_IDLE_EVERY - 1 {
            drop(admission.admit(&format!("{i:012}")).expect("admitted"));
        }
        assert_eq!(remembered(), FORGET_IDLE_EVERY as usize - 1);
        // Budgets refill at 1,000 a second: a few milliseconds make every one full again.
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(admission.admit("999999999999").expect("admitted"));
        assert!(remembered() <= 1, "{} accounts remembered", remembered());
    }
}
