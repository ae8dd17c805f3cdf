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
    per_account: Option<DefaultKeyedRateLimiter<String>>,
    /// Requests seen by the per-account limiter, to forget idle accounts now and then.
    checked: AtomicU64,
}

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
            per_account,
            checked: AtomicU64::new(0),
        }
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
