//! LVM against the recording stand-in of the lvm2 tools
//! (`tests/stand-ins/lvm/lvm-standin`): LVM cannot run on the machine these
//! tests were written on (no device-mapper). Each test gets its own copy of
//! the tools, with its own state and call log.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::*;

const STANDIN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/stand-ins/lvm/lvm-standin"
);
const TOOLS: [&str; 7] = [
    "lvs",
    "lvcreate",
    "lvremove",
    "lvchange",
    "lvconvert",
    "mount",
    "umount",
];

struct Stand {
    dir: tempfile::TempDir,
    lvm: Lvm,
}

impl Stand {
    /// Tools over `state`; `content` becomes what a mounted snapshot holds.
    fn new(state: Value) -> Stand {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::copy(STANDIN, bin.join("lvm-standin")).unwrap();
        for t in TOOLS {
            std::os::unix::fs::symlink("lvm-standin", bin.join(t)).unwrap();
        }
        std::fs::write(bin.join("state.json"), state.to_string()).unwrap();
        std::fs::create_dir(bin.join("content")).unwrap();
        std::fs::write(bin.join("content/PG_VERSION"), b"15\n").unwrap();
        let lvm = Lvm {
            snapshot_size: SnapshotSize::Share(0.2),
            mount_base: dir.path().join("mnt"),
            bin: Some(bin),
        };
        Stand { dir, lvm }
    }

    fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.dir.path().join("bin/calls.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn state(&self) -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(self.dir.path().join("bin/state.json")).unwrap(),
        )
        .unwrap()
    }

    fn edit(&self, f: impl FnOnce(&mut Value)) {
        let mut s = self.state();
        f(&mut s);
        std::fs::write(self.dir.path().join("bin/state.json"), s.to_string()).unwrap();
    }

    fn names(&self) -> Vec<String> {
        self.state()["lvs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r["vg"].as_str().unwrap(),
                    r["name"].as_str().unwrap()
                )
            })
            .collect()
    }
}

fn lv(vg: &str, name: &str, attr: &str, size: u64, origin: &str, pool: &str, pct: &str) -> Value {
    json!({"vg": vg, "name": name, "attr": attr, "size": size.to_string(), "data_percent": pct,
           "origin": origin, "pool": pool, "time": "2026-12-04 12:00:00 +0000"})
}

/// vg0 with a thick volume `data` (10 GiB), a thin pool and a thin volume.
fn world(pool_pct: &str) -> Value {
    json!({
        "vgs": {"vg0": {"free": 4u64 << 30}},
        "lvs": [
            lv("vg0", "data", "-wi-ao----", 10 << 30, "", "", ""),
            lv("vg0", "pool", "twi-aotz--", 20 << 30, "", "", pool_pct),
            lv("vg0", "thin", "Vwi-aotz--", 5 << 30, "", "pool", "10.00"),
            lv("vg0", "daily", "swi-a-s---", 1 << 30, "data", "", "3.00"),
        ]
    })
}

fn volume(name: &str) -> Volume {
    Volume {
        kind: Kind::Lvm,
        name: name.into(),
        mount_point: PathBuf::from("/srv/data"),
        fs_type: "xfs".into(),
        device: format!("/dev/mapper/{}", name.replace('/', "-")),
    }
}

fn argv(call: &[String]) -> String {
    // The tool's own name, without the folder.
    let mut v = call.to_vec();
    v[0] = Path::new(&v[0])
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    v.join(" ")
}

#[test]
fn a_thick_snapshot_is_sized_mounted_read_only_and_removed() {
    let s = Stand::new(world("10.00"));
    let name = naming::Name::new(Purpose::Read).to_string();
    let snap = s.lvm.create(&volume("vg0/data"), &name).unwrap();
    assert_eq!(snap.handle, format!("vg0/{name}"));
    let view = s.lvm.open(&snap).unwrap();
    assert_eq!(
        std::fs::read(view.root.join("PG_VERSION")).unwrap(),
        b"15\n"
    );
    assert_eq!(s.lvm.usage(&snap).unwrap(), Some(0.0));
    view.release().unwrap();
    s.lvm.destroy(&snap).unwrap();
    let calls: Vec<String> = s.calls().iter().map(|c| argv(c)).collect();
    let fields = "lv_name,vg_name,lv_attr,lv_size,data_percent,origin,pool_lv,lv_time";
    let mnt = s.dir.path().join("mnt").join(&name);
    assert_eq!(
        calls,
        vec![
            format!("lvs --reportformat json --units b --nosuffix -o {fields} vg0/data"),
            // 20 % of 10 GiB, in bytes.
            format!("lvcreate --snapshot --name {name} --size 2147483648b vg0/data"),
            format!("lvs --reportformat json --units b --nosuffix -o {fields} vg0/{name}"),
            // Not mounted here, so no type: plain ro.
            format!("mount -o ro /dev/vg0/{name} {}", mnt.display()),
            format!("lvs --reportformat json --units b --nosuffix -o {fields} vg0/{name}"),
            format!("umount {}", mnt.display()),
            format!("lvremove --yes vg0/{name}"),
        ]
    );
    assert!(!s.names().contains(&format!("vg0/{name}")));
    assert_eq!(read_only_options("xfs"), "ro,nouuid");
    assert_eq!(read_only_options("ext4"), "ro,noload");
}

#[test]
fn a_thin_snapshot_needs_no_size_is_activated_and_refused_when_the_pool_is_nearly_full() {
    let s = Stand::new(world("50.00"));
    let name = naming::Name::new(Purpose::Read).to_string();
    let snap = s.lvm.create(&volume("vg0/thin"), &name).unwrap();
    let view = s.lvm.open(&snap).unwrap();
    drop(view);
    let calls: Vec<String> = s.calls().iter().map(|c| argv(c)).collect();
    assert!(
        calls.contains(&format!("lvcreate --snapshot --name {name} vg0/thin")),
        "{calls:#?}"
    );
    assert!(
        calls.contains(&format!(
            "lvchange --activate y --ignoreactivationskip vg0/{name}"
        )),
        "{calls:#?}"
    );
    assert!(
        calls.iter().any(|c| c.starts_with("umount ")),
        "dropping the view unmounts: {calls:#?}"
    );
    assert_eq!(
        s.lvm.usage(&snap).unwrap(),
        None,
        "thin snapshots have no room of their own"
    );

    let full = Stand::new(world("85.50"));
    let e = full
        .lvm
        .create(
            &volume("vg0/thin"),
            &naming::Name::new(Purpose::Read).to_string(),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("thin pool vg0/pool") && e.contains("86% full"),
        "{e}"
    );
    assert!(e.contains("breaks every volume"), "{e}");
    assert!(!full.calls().iter().any(|c| argv(c).starts_with("lvcreate")));
}

#[test]
fn a_snapshot_that_fills_is_watched_and_an_invalid_one_never_opened() {
    let s = Stand::new(world("10.00"));
    let name = naming::Name::new(Purpose::Read).to_string();
    let snap = s.lvm.create(&volume("vg0/data"), &name).unwrap();
    // The origin changes fast: the snapshot fills 30 points per report.
    s.edit(|st| st["fill"] = json!({ snap.handle.clone(): 30.0 }));
    let mut seen = vec![];
    while let Some(u) = s.lvm.usage(&snap).unwrap() {
        seen.push(u);
        if u >= 1.0 {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|u| (WARN_AT..ABORT_AT).contains(u) || *u >= ABORT_AT),
        "{seen:?}"
    );
    assert_eq!(*seen.last().unwrap(), 1.0, "it overflowed: {seen:?}");
    let e = match s.lvm.open(&snap) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("an invalid snapshot was opened"),
    };
    assert!(
        e.contains("invalid") && e.contains("--lvm-snapshot-size"),
        "{e}"
    );
    assert!(!s.calls().iter().any(|c| argv(c).starts_with("mount")));
}

#[test]
fn leftovers_are_exactly_pvsnaps_read_and_tmp_volumes_and_mounts() {
    let s = Stand::new(world("10.00"));
    let read = naming::Name::new(Purpose::Read).to_string();
    let keep = naming::Name::new(Purpose::Keep).to_string();
    let v = volume("vg0/data");
    s.lvm.create(&v, &read).unwrap();
    s.lvm.create(&v, &keep).unwrap();
    // A killed run: the read snapshot stays; the user's `daily` and the
    // kept restore point are not ours to remove.
    let found = s.lvm.leftovers(&v).unwrap();
    assert_eq!(
        found,
        vec![Leftover {
            kind: Kind::Lvm,
            what: "volume".into(),
            handle: format!("vg0/{read}")
        }]
    );
    for l in &found {
        s.lvm.remove_leftover(l).unwrap();
    }
    let names = s.names();
    assert!(names.contains(&"vg0/daily".to_string()));
    assert!(names.contains(&format!("vg0/{keep}")));
    assert!(!names.contains(&format!("vg0/{read}")));
    let listed: Vec<String> = s
        .lvm
        .list(&v)
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(listed, vec![keep], "only pvsnap's own, oldest first");
}

#[test]
fn rollback_merges_and_clones_are_thin_only() {
    let s = Stand::new(world("10.00"));
    let keep = naming::Name::new(Purpose::Keep).to_string();
    let snap = s.lvm.create(&volume("vg0/data"), &keep).unwrap();
    s.lvm.rollback(&volume("vg0/data"), &snap).unwrap();
    assert!(
        s.calls()
            .iter()
            .any(|c| argv(c) == format!("lvconvert --merge vg0/{keep}"))
    );
    let e = s
        .lvm
        .clone_to(&snap, &s.dir.path().join("clone"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("thick snapshot") && e.contains("thin"), "{e}");

    let thin = s
        .lvm
        .create(
            &volume("vg0/thin"),
            &naming::Name::new(Purpose::Keep).to_string(),
        )
        .unwrap();
    let at = s.dir.path().join("staging");
    assert_eq!(s.lvm.clone_to(&thin, &at).unwrap(), at);
    assert_eq!(std::fs::read(at.join("PG_VERSION")).unwrap(), b"15\n");
}

#[test]
fn lvm2_errors_and_hostile_reports_are_clear() {
    let s = Stand::new(world("10.00"));
    let e = s
        .lvm
        .create(&volume("vg9/data"), "pvsnap-read-x")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Failed to find logical volume") || e.contains("vg9"),
        "{e}"
    );
    // Too little room in the volume group for a thick snapshot.
    s.edit(|st| st["vgs"]["vg0"]["free"] = json!(100u64 << 20));
    let e = s
        .lvm
        .create(
            &volume("vg0/data"),
            &naming::Name::new(Purpose::Read).to_string(),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("insufficient free space"), "{e}");
    let gone = NativeSnapshot {
        kind: Kind::Lvm,
        volume: "vg0/data".into(),
        name: "pvsnap-keep-x".into(),
        handle: "vg0/pvsnap-keep-x".into(),
        created: None,
    };
    assert!(matches!(s.lvm.destroy(&gone), Err(Error::Missing { .. })));

    for bad in [
        "",
        "  {\n      \"report\": [\n",
        "{\"report\": [{\"lv\": [{\"lv_name\": 5}]}]}",
        "{\"report\": [{\"lv\": [{\"vg_name\": \"vg0\"}]}]}",
        "{\"reports\": []}",
    ] {
        let e = parse_lvs("lvs vg0/data", bad).unwrap_err().to_string();
        assert!(
            e.contains("`lvs vg0/data`") && e.contains("not an lvm2 JSON report"),
            "{bad:?}: {e}"
        );
    }
    assert_eq!(
        SnapshotSize::parse("20%").unwrap(),
        SnapshotSize::Share(0.2)
    );
    assert_eq!(
        SnapshotSize::parse("10G").unwrap(),
        SnapshotSize::Bytes(10 << 30)
    );
    assert!(SnapshotSize::parse("0%").is_err());
    assert!(
        SnapshotSize::parse("10X")
            .unwrap_err()
            .contains("unknown unit")
    );
    assert_eq!(
        SnapshotSize::Share(0.2).bytes_for(100 << 20),
        64 << 20,
        "at least 64 MiB"
    );
}
