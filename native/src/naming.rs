//! The names pvsnap gives what it makes on the storage.
//!
//! `pvsnap-<purpose>-<UTC time as YYYYMMDDTHHMMSSZ>-<8 hex>`, where the
//! purpose says what may be cleaned up:
//! - `keep`: a restore point that a repository snapshot records
//!   (`--native-only`, `--keep-native`); removed only by `forget`.
//! - `read`: taken to be read into the repository; removed when the read
//!   ends, or as a leftover by the next run.
//! - `tmp`: a clone, mount or hold made to read a snapshot; a leftover as
//!   soon as its run is gone.
//!
//! Nothing without the `pvsnap-` prefix is ever touched by cleanup.

use std::fmt;

pub const PREFIX: &str = "pvsnap-";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Keep,
    Read,
    Tmp,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Keep => "keep",
            Purpose::Read => "read",
            Purpose::Tmp => "tmp",
        }
    }
}

/// A parsed pvsnap name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub purpose: Purpose,
    pub time: jiff::Timestamp,
    /// 8 lowercase hex digits that keep two names of one second apart.
    pub nonce: String,
}

impl Name {
    /// A new name for `purpose`, made now.
    pub fn new(purpose: Purpose) -> Name {
        Name::at(purpose, jiff::Timestamp::now())
    }

    /// A new name for `purpose` with time `time` (whole seconds kept).
    pub fn at(purpose: Purpose, time: jiff::Timestamp) -> Name {
        let mut b = [0u8; 4];
        fill_random(&mut b);
        let time =
            jiff::Timestamp::from_second(time.as_second()).expect("whole seconds of a valid time");
        Name {
            purpose,
            time,
            nonce: b.iter().map(|x| format!("{x:02x}")).collect(),
        }
    }

    /// Parses a name pvsnap made; `None` for anything else.
    pub fn parse(s: &str) -> Option<Name> {
        let rest = s.strip_prefix(PREFIX)?;
        let mut parts = rest.splitn(3, '-');
        let purpose = match parts.next()? {
            "keep" => Purpose::Keep,
            "read" => Purpose::Read,
            "tmp" => Purpose::Tmp,
            _ => return None,
        };
        let time = parts.next()?;
        let nonce = parts.next()?;
        if nonce.len() != 8
            || !nonce
                .bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        let time = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", time)
            .ok()?
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()?
            .timestamp();
        Some(Name {
            purpose,
            time,
            nonce: nonce.to_owned(),
        })
    }
}

impl Name {
    /// The name in lowercase, as Kubernetes object names must be (a CSI
    /// VolumeSnapshot's name): `pvsnap-keep-20261204t120000z-0123abcd`.
    pub fn to_dns_label(&self) -> String {
        self.to_string().to_ascii_lowercase()
    }

    /// Parses a name made by [`Name::to_dns_label`] (or [`Name::parse`]'s
    /// form); `None` for anything else.
    pub fn parse_dns_label(s: &str) -> Option<Name> {
        let rest = s.strip_prefix(PREFIX)?;
        let (purpose, rest) = rest.split_once('-')?;
        let (time, nonce) = rest.split_once('-')?;
        let time = time.to_ascii_uppercase();
        Name::parse(&format!("{PREFIX}{purpose}-{time}-{nonce}"))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}-{}-{}",
            self.purpose.as_str(),
            self.time.strftime("%Y%m%dT%H%M%SZ"),
            self.nonce
        )
    }
}

fn fill_random(buf: &mut [u8]) {
    use std::io::Read;
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .is_err()
    {
        // Uniqueness, not secrecy, is what the nonce is for.
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ std::process::id())
            .unwrap_or(0);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (n >> (8 * (i % 4))) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_not_ours() {
        for p in [Purpose::Keep, Purpose::Read, Purpose::Tmp] {
            let n = Name::new(p);
            let s = n.to_string();
            assert!(s.starts_with("pvsnap-"), "{s}");
            assert_eq!(Name::parse(&s), Some(n.clone()), "{s}");
            let dns = n.to_dns_label();
            assert_eq!(dns, dns.to_ascii_lowercase());
            assert_eq!(Name::parse_dns_label(&dns), Some(n), "{dns}");
        }
        for s in [
            "pvsnap-KEEP-20261204t120000z-0123abcd",
            "pvsnap-keep-20261204t120000z-0123ABCD",
            "pvsnap-keep-20261204x120000z-0123abcd",
            "other-keep-20261204t120000z-0123abcd",
        ] {
            assert_eq!(Name::parse_dns_label(s), None, "{s}");
        }
        for s in [
            "daily-2026",
            "pvsnap-",
            "pvsnap-keep",
            "pvsnap-other-20261204T120000Z-0123abcd",
            "pvsnap-read-20261204T120000Z-0123ABCD",
            "pvsnap-read-20261204T120000Z-0123abc",
            "pvsnap-read-2026-12-04-0123abcd",
            "zfs-auto-snap_daily-2026-12-04",
        ] {
            assert_eq!(Name::parse(s), None, "{s}");
        }
    }
}
