//! Rendering helpers shared by the commands.

use std::io::Write;

use jiff::tz::TimeZone;

/// Whether an error is a closed standard output (`pvsnap ls | head`).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<pvsnap_engine::Error>().is_some_and(|pe| {
                matches!(pe, pvsnap_engine::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
            })
    })
}

/// An error and its causes on one line, each said once: a cause whose
/// text the message before it already ends with (`write failed: No space
/// left on device (os error 28)`) is not repeated.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.ends_with(&part) || text.contains(&format!("{part}: ")) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Prints pretty JSON to standard output.
pub fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    // Buffered: standard output flushes each line, and pretty JSON of
    // 10,000 snapshots is 400,000 lines (a second of write calls).
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// `1.5 GiB`-style sizes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A timestamp in the local time zone, to the second.
pub fn local_time(t: jiff::Timestamp) -> String {
    t.to_zoned(TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_already_in_the_message_are_said_once() {
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e = anyhow::Error::from(pvsnap_engine::Error::Io {
            path: "/r/data/00/x".into(),
            action: "write",
            source: io,
        });
        let text = super::error_text(&e);
        assert_eq!(text.matches("No space left on device").count(), 1, "{text}");
        let e = anyhow::anyhow!("inner cause").context("outer");
        assert_eq!(super::error_text(&e), "outer: inner cause");
    }
}
