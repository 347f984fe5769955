//! Human-readable durations in `feature_store.yaml`: `500ms`, `5s`, `10m`, `24h`, `7d`, `1h30m`,
//! or a bare number of seconds. `0` means "none" where a field says so (no ttl, cache disabled).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written the human way; deserializes from `"24h"`, `"500ms"`, `90` (seconds), ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `1h30m`, `250ms`, `7d`, `0`, `15` (seconds).
    pub fn parse(text: &str) -> Result<Self, String> {
        let s = text.trim();
        if s.is_empty() {
            return Err("empty duration".into());
        }
        if let Ok(secs) = s.parse::<u64>() {
            return Ok(HumanDuration(Duration::from_secs(secs)));
        }
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!(
                    "invalid duration {text:?}: expected a number before the unit"
                ));
            }
            let number: f64 = rest[..digits]
                .parse()
                .map_err(|_| format!("invalid duration {text:?}"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = rest[..unit_len].trim();
            rest = &rest[unit_len..];
            let unit_secs = match unit {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86_400.0,
                "w" => 604_800.0,
                "" => {
                    return Err(format!(
                        "invalid duration {text:?}: missing unit (ms, s, m, h, d, w)"
                    ));
                }
                other => {
                    return Err(format!(
                        "invalid duration {text:?}: unknown unit {other:?} (use ms, s, m, h, d, w)"
                    ));
                }
            };
            total += Duration::from_secs_f64(number * unit_secs);
        }
        Ok(HumanDuration(total))
    }

    /// The duration, or `None` when it is zero.
    pub fn non_zero(self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }

    /// Whole microseconds, saturating.
    pub fn as_micros_i64(self) -> i64 {
        i64::try_from(self.0.as_micros()).unwrap_or(i64::MAX)
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        HumanDuration(d)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else {
            let s = self.0.as_secs();
            match s {
                s if s != 0 && s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
                s if s != 0 && s % 3600 == 0 => write!(f, "{}h", s / 3600),
                s if s != 0 && s % 60 == 0 => write!(f, "{}m", s / 60),
                s => write!(f, "{s}s"),
            }
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"500ms\", \"5s\", \"24h\" or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Ok(HumanDuration(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                u64::try_from(v)
                    .map(|v| HumanDuration(Duration::from_secs(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<HumanDuration, E> {
                if v.is_finite() && v >= 0.0 {
                    Ok(HumanDuration(Duration::from_secs_f64(v)))
                } else {
                    Err(E::custom(
                        "a duration must be a non-negative number of seconds",
                    ))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                HumanDuration::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compound_durations() {
        let p = |s| HumanDuration::parse(s).unwrap().0;
        assert_eq!(p("24h"), Duration::from_secs(86_400));
        assert_eq!(p("500ms"), Duration::from_millis(500));
        assert_eq!(p("1h30m"), Duration::from_secs(5400));
        assert_eq!(p("15"), Duration::from_secs(15));
        assert_eq!(p("0"), Duration::ZERO);
        assert!(HumanDuration::parse("5 parsecs").is_err());
        assert!(HumanDuration::parse("h").is_err());
    }

    #[test]
    fn displays_in_the_largest_whole_unit() {
        assert_eq!(HumanDuration::parse("86400s").unwrap().to_string(), "1d");
        assert_eq!(
            HumanDuration::parse("1500ms").unwrap().to_string(),
            "1500ms"
        );
    }
}
