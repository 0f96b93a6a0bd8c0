//! The folders above the snapshots: how a person finds a point in time.
//!
//! ```text
//! snapshots/<YYYY-MM-DDTHH:MM:SS>_<short-id>/   every snapshot
//! sources/<source>/<YYYY-MM-DDTHH:MM:SS>/       one timeline per source
//! sources/<source>/latest -> <its newest time>
//! ids/<short-id> -> ../snapshots/<time>_<short-id>
//! ```
//!
//! Times are in the local time zone. A second snapshot of one source in the
//! same second is named `<time>_<short-id>`. The short id is the first 8 hex
//! digits of the snapshot id, or more when two snapshots share those.
//!
//! # Naming sources
//! A path source is one folder named by [`path_source_name`]: each `/` becomes
//! `_`, and `_` and `%` themselves are %-escaped (`%5F`, `%25`), so
//! `/var/lib/my_app` is `_var_lib_my%5Fapp`. The mapping is reversible, hence
//! collision-free. Path sources start with `/`, so their names start with `_`.
//!
//! A PVC source (key `pvc/<namespace>/<pvc>`) is the nested folders
//! `<namespace>/<pvc>`, each part escaped by [`escape_part`] (`/`, `_` and `%`
//! %-escaped; Kubernetes names contain none of them, so they read as is). A
//! namespace folder never contains a bare `_`, while a path folder always does
//! (its leading `/`), so the two kinds cannot collide either. The rare relative
//! path source is named `._<escaped>`, which neither kind produces.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::tz::TimeZone;

use crate::repo::id::{ID_LEN, SnapshotId};
use crate::snapshot::{Snapshot, Source};

/// A node of the layout.
#[derive(Debug, Clone)]
pub(crate) enum VNode {
    Dir(VDir),
    /// A symlink with this target.
    Link(Vec<u8>),
    /// A snapshot's root folder.
    Snapshot(Arc<Snapshot>),
}

/// A folder of the layout; `mtime_ns` is the time of the newest snapshot below.
#[derive(Debug, Clone, Default)]
pub(crate) struct VDir {
    pub(crate) entries: BTreeMap<Vec<u8>, VNode>,
    pub(crate) mtime_ns: i64,
}

impl VDir {
    /// The node at `path` below this folder.
    pub(crate) fn resolve(&self, path: &[Vec<u8>]) -> Option<&VNode> {
        let (first, rest) = path.split_first()?;
        let node = self.entries.get(first)?;
        if rest.is_empty() {
            return Some(node);
        }
        match node {
            VNode::Dir(d) => d.resolve(rest),
            _ => None,
        }
    }

    fn dir_mut(&mut self, name: &[u8]) -> &mut VDir {
        let node = self
            .entries
            .entry(name.to_vec())
            .or_insert_with(|| VNode::Dir(VDir::default()));
        if !matches!(node, VNode::Dir(_)) {
            *node = VNode::Dir(VDir::default());
        }
        match node {
            VNode::Dir(d) => d,
            _ => unreachable!("made a folder above"),
        }
    }
}

/// Escapes one name part: `%`, `/` and `_` become `%25`, `%2F`, `%5F`; a part
/// that would be `.` or `..` has its dots escaped, and an empty one is `%`.
pub fn escape_part(part: &str) -> String {
    match part {
        "" => return "%".into(),
        "." => return "%2E".into(),
        ".." => return "%2E%2E".into(),
        _ => {}
    }
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '_' => out.push_str("%5F"),
            '\0' => out.push_str("%00"),
            c => out.push(c),
        }
    }
    out
}

/// The folder name of a path source; see the module documentation.
pub fn path_source_name(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        out.push_str("._");
    }
    for c in path.chars() {
        match c {
            '%' => out.push_str("%25"),
            '_' => out.push_str("%5F"),
            '/' => out.push('_'),
            '\0' => out.push_str("%00"),
            c => out.push(c),
        }
    }
    out
}

/// The folders of `source` below `sources/`.
pub fn source_dirs(source: &Source) -> Vec<String> {
    match source {
        Source::Path { path } => vec![path_source_name(path)],
        Source::Pvc { namespace, pvc, .. } => vec![escape_part(namespace), escape_part(pvc)],
    }
}

/// `YYYY-MM-DDTHH:MM:SS` in `tz`.
pub fn time_name(t: jiff::Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone())
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// How many hex digits name every snapshot uniquely: at least 8.
pub fn short_id_len(ids: &[SnapshotId]) -> usize {
    let mut sorted: Vec<&SnapshotId> = ids.iter().collect();
    sorted.sort();
    let mut digits = crate::repo::id::SHORT_ID_HEX;
    for w in sorted.windows(2) {
        let (a, b) = (w[0].to_hex(), w[1].to_hex());
        let common = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
        digits = digits.max((common + 1).min(ID_LEN * 2));
    }
    digits
}

/// Builds the layout from snapshots sorted oldest first.
pub(crate) fn build(snaps: &[Arc<Snapshot>], tz: &TimeZone) -> VDir {
    let ids: Vec<SnapshotId> = snaps.iter().map(|s| s.id).collect();
    let digits = short_id_len(&ids);
    let mut root = VDir::default();
    for top in ["snapshots", "sources", "ids"] {
        root.dir_mut(top.as_bytes());
    }
    for snap in snaps {
        let short = &snap.id.to_hex()[..digits];
        let time = time_name(snap.time, tz);
        let mtime = snap
            .time
            .as_nanosecond()
            .clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        root.mtime_ns = root.mtime_ns.max(mtime);
        let name = format!("{time}_{short}");
        {
            let dir = root.dir_mut(b"snapshots");
            dir.mtime_ns = dir.mtime_ns.max(mtime);
            dir.entries
                .insert(name.clone().into_bytes(), VNode::Snapshot(snap.clone()));
        }
        {
            let dir = root.dir_mut(b"ids");
            dir.mtime_ns = dir.mtime_ns.max(mtime);
            dir.entries.insert(
                short.as_bytes().to_vec(),
                VNode::Link(format!("../snapshots/{name}").into_bytes()),
            );
        }
        let mut dir = root.dir_mut(b"sources");
        dir.mtime_ns = dir.mtime_ns.max(mtime);
        for part in source_dirs(&snap.source) {
            dir = dir.dir_mut(part.as_bytes());
            dir.mtime_ns = dir.mtime_ns.max(mtime);
        }
        let mut entry = time.clone();
        if dir.entries.contains_key(entry.as_bytes()) {
            entry = format!("{time}_{short}");
        }
        dir.entries
            .insert(entry.clone().into_bytes(), VNode::Snapshot(snap.clone()));
        dir.entries
            .insert(b"latest".to_vec(), VNode::Link(entry.into_bytes()));
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::id::Id;
    use crate::snapshot::Summary;
    use crate::tree::Node;
    use proptest::prelude::*;

    fn unescape_path_name(name: &str) -> Option<String> {
        let body = name.strip_prefix("._").unwrap_or(name);
        let relative = body.len() != name.len();
        let mut out = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '_' => out.push('/'),
                '%' => {
                    let hex: String = chars.by_ref().take(2).collect();
                    out.push(u8::from_str_radix(&hex, 16).ok()? as char);
                }
                c => out.push(c),
            }
        }
        (relative != out.starts_with('/')).then_some(out)
    }

    proptest! {
        #[test]
        fn path_names_are_reversible(path in "(/?[a-z_%./]{0,12})") {
            let name = path_source_name(&path);
            prop_assert_eq!(unescape_path_name(&name), Some(path.clone()));
            prop_assert!(!name.is_empty() && name != "." && name != ".." && !name.contains('/'));
        }

        #[test]
        fn parts_are_valid_names_and_never_look_like_paths(part in "[a-z_%./]{0,8}") {
            let name = escape_part(&part);
            prop_assert!(!name.is_empty() && name != "." && name != ".." && !name.contains('/'));
            prop_assert!(!name.contains('_'), "a bare `_` marks path sources only");
        }
    }

    #[test]
    fn names_of_different_sources_never_collide() {
        let paths = [
            "/var/lib/x",
            "/var/lib_x",
            "/var_lib/x",
            "/var%5Flib/x",
            "/",
            "//",
            "x",
            "./x",
            "._x",
            "_x",
            "/x_",
        ];
        let mut names: Vec<String> = paths.iter().map(|p| path_source_name(p)).collect();
        for ns in ["x", "_x", "var_lib_x", "%5F", "", "\0", ".", ".."] {
            names.push(escape_part(ns));
        }
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "{names:?}");
        assert_eq!(path_source_name("/var/lib/x"), "_var_lib_x");
        assert_eq!(path_source_name("/srv/my_app"), "_srv_my%5Fapp");
        assert_eq!(escape_part("prod-db"), "prod-db");
    }

    #[test]
    fn short_ids_grow_until_unique() {
        let mut a = [0u8; 32];
        a[0] = 0xab;
        let mut b = a;
        b[4] = 0x10;
        let c = [0xffu8; 32];
        let ids = [SnapshotId(Id(a)), SnapshotId(Id(b)), SnapshotId(Id(c))];
        assert_eq!(short_id_len(&ids[..1]), 8);
        assert_eq!(short_id_len(&[ids[0], ids[2]]), 8);
        assert_eq!(
            short_id_len(&ids),
            9,
            "ab000000 00… and ab000000 10… differ at digit 9"
        );
    }

    fn snap(id: u8, secs: i64, source: Source) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            id: SnapshotId(Id([id; 32])),
            time: jiff::Timestamp::from_second(secs).unwrap(),
            hostname: "h".into(),
            source,
            tags: vec![],
            labels: Default::default(),
            parent: None,
            root: Node {
                mode: 0o755,
                ..crate::tree::tests::fifo(b"x")
            },
            tree: Default::default(),
            summary: Summary::default(),
            errors: vec![],
            hooks: vec![],
            program_version: "test".into(),
            original: None,
            source_snapshot: None,
        })
    }

    fn names(d: &VDir, path: &[&str]) -> Vec<String> {
        let path: Vec<Vec<u8>> = path.iter().map(|p| p.as_bytes().to_vec()).collect();
        let dir = if path.is_empty() {
            d
        } else {
            match d.resolve(&path) {
                Some(VNode::Dir(d)) => d,
                other => panic!("{path:?} is {other:?}"),
            }
        };
        dir.entries
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn layout_has_snapshots_sources_and_ids() {
        let path = Source::Path {
            path: "/var/lib/x".into(),
        };
        let pvc = Source::Pvc {
            cluster: "c".into(),
            namespace: "prod".into(),
            pvc: "db".into(),
            pv: "pv-1".into(),
            storage_class: None,
            capacity: None,
            labels: Default::default(),
            node: None,
            host_path: "/mnt/pv-1".into(),
        };
        let snaps = vec![
            snap(0x11, 100, path.clone()),
            snap(0x22, 100, path.clone()),
            snap(0x33, 200, pvc),
        ];
        let root = build(&snaps, &TimeZone::UTC);
        assert_eq!(names(&root, &[]), ["ids", "snapshots", "sources"]);
        assert_eq!(
            names(&root, &["snapshots"]),
            [
                "1970-01-01T00:01:40_11111111",
                "1970-01-01T00:01:40_22222222",
                "1970-01-01T00:03:20_33333333"
            ]
        );
        assert_eq!(names(&root, &["sources"]), ["_var_lib_x", "prod"]);
        assert_eq!(
            names(&root, &["sources", "_var_lib_x"]),
            [
                "1970-01-01T00:01:40",
                "1970-01-01T00:01:40_22222222",
                "latest"
            ],
            "the later snapshot in the same second gets its id appended"
        );
        let latest = root.resolve(&[
            b"sources".to_vec(),
            b"_var_lib_x".to_vec(),
            b"latest".to_vec(),
        ]);
        assert!(matches!(latest, Some(VNode::Link(t)) if t == b"1970-01-01T00:01:40_22222222"));
        assert_eq!(
            names(&root, &["sources", "prod", "db"]),
            ["1970-01-01T00:03:20", "latest"]
        );
        let id = root.resolve(&[b"ids".to_vec(), b"33333333".to_vec()]);
        assert!(
            matches!(id, Some(VNode::Link(t)) if t == b"../snapshots/1970-01-01T00:03:20_33333333")
        );
        let VNode::Dir(sources) = &root.entries[&b"sources".to_vec()] else {
            panic!()
        };
        assert_eq!(sources.mtime_ns, 200_000_000_000);
    }
}
