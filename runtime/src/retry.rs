//! The retry policy every executor shares. An executor says what kind of
//! failure it saw ([`Class`]: transient, with the delay a server asked for, or
//! permanent); the scheduler combines that with the step's
//! [`RetryPolicy`] to pick the next delay: exponential backoff with full
//! jitter, capped by `max_delay`, `Retry-After` honoured up to that cap, and
//! no retry once `max_elapsed` would be passed. See docs/http.md.

use std::time::{Duration, SystemTime};

use pipe_lang::plan::{Backoff, RetryPolicy};

/// What an executor knows about a failure that the exit code does not say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Another attempt may succeed (a 503, a refused connection). `after` is
    /// the delay the server asked for with `Retry-After`.
    Transient { after: Option<Duration> },
    /// Another attempt would fail the same way (a 4xx, a bad certificate, a
    /// request that must not be sent twice).
    Permanent,
}

/// The longest wait the policy allows between two attempts.
pub fn max_delay(b: Backoff) -> Duration {
    Duration::from_millis(match b {
        Backoff::Fixed { delay_ms } => delay_ms,
        Backoff::Exponential { max_ms, .. } | Backoff::Linear { max_ms, .. } => max_ms,
    })
}

/// The delay after failed attempt `n` (1-based). Exponential backoff uses
/// full jitter (uniform in `[0, min(max, base·2ⁿ⁻¹)]`), which spreads
/// clients retrying against the same server; fixed and linear delays vary by
/// up to ±20%. Never above the policy's cap.
pub fn backoff(b: Backoff, n: u32) -> Duration {
    let n = n.max(1);
    let cap = max_delay(b).as_millis() as u64;
    let ms = match b {
        Backoff::Exponential { base_ms, max_ms } => {
            let ceiling = base_ms.saturating_mul(1u64 << (n - 1).min(32)).min(max_ms);
            (ceiling as f64 * random_unit()) as u64
        }
        Backoff::Fixed { delay_ms } => jitter(delay_ms),
        Backoff::Linear { base_ms, max_ms } => {
            jitter(base_ms.saturating_mul(u64::from(n)).min(max_ms))
        }
    };
    Duration::from_millis(ms.min(cap))
}

fn jitter(base: u64) -> u64 {
    let j = (base as f64 * 0.2 * (2.0 * random_unit() - 1.0)) as i64;
    (base as i64 + j).max(0) as u64
}

/// The wait before the attempt after failed attempt `failed`, or `None` when
/// waiting would pass the policy's `max_elapsed` (counted from the first
/// attempt's start). A server's `Retry-After` replaces the backoff when the
/// policy respects it, capped by `max_delay`.
pub fn next_delay(
    policy: &RetryPolicy,
    failed: u32,
    elapsed: Duration,
    class: Option<Class>,
) -> Option<Duration> {
    let delay = match class {
        Some(Class::Transient { after: Some(after) }) if policy.respect_retry_after => {
            after.min(max_delay(policy.backoff))
        }
        _ => backoff(policy.backoff, failed),
    };
    match policy.max_elapsed_ms {
        Some(max) if elapsed + delay > Duration::from_millis(max) => None,
        _ => Some(delay),
    }
}

/// Reads a `Retry-After` header: delay-seconds or an HTTP date (a date in
/// the past means now).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A cheap random number in [0, 1) for jitter (not for anything secret).
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff: Backoff, max_elapsed_ms: Option<u64>) -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            backoff,
            max_elapsed_ms,
            on: vec![],
            respect_retry_after: true,
            span: pipe_lang::Span::default(),
        }
    }

    #[test]
    fn exponential_has_full_jitter_under_a_growing_ceiling() {
        let e = Backoff::Exponential {
            base_ms: 100,
            max_ms: 1000,
        };
        let mut low = false;
        for _ in 0..200 {
            let d1 = backoff(e, 1).as_millis();
            assert!(d1 <= 100, "{d1}");
            low |= d1 < 50;
            assert!(backoff(e, 3).as_millis() <= 400);
            assert!(backoff(e, 30).as_millis() <= 1000);
        }
        assert!(low, "full jitter reaches the lower half");
        let l = backoff(
            Backoff::Linear {
                base_ms: 100,
                max_ms: 250,
            },
            2,
        )
        .as_millis();
        assert!((160..=240).contains(&l), "{l}");
    }

    #[test]
    fn retry_after_is_honoured_up_to_max_delay() {
        let p = policy(
            Backoff::Exponential {
                base_ms: 10,
                max_ms: 5000,
            },
            None,
        );
        let t = |s| {
            Some(Class::Transient {
                after: Some(Duration::from_secs(s)),
            })
        };
        assert_eq!(
            next_delay(&p, 1, Duration::ZERO, t(2)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            next_delay(&p, 1, Duration::ZERO, t(9999)),
            Some(Duration::from_secs(5))
        );
        let mut ignoring = p.clone();
        ignoring.respect_retry_after = false;
        assert!(
            next_delay(&ignoring, 1, Duration::ZERO, t(2)).unwrap() <= Duration::from_millis(10)
        );
    }

    #[test]
    fn max_elapsed_stops_retrying() {
        let p = policy(Backoff::Fixed { delay_ms: 1000 }, Some(3000));
        assert!(next_delay(&p, 1, Duration::from_millis(500), None).is_some());
        assert_eq!(next_delay(&p, 2, Duration::from_millis(2900), None), None);
    }

    #[test]
    fn retry_after_in_both_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 2 ", now), Some(Duration::from_secs(2)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
