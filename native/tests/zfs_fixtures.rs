//! OpenZFS output formats from fixtures (see fixtures/zfs/README for where
//! each format comes from), and the mount table lines of both ZFS kinds.

use std::path::Path;

use pvsnap_native::zfs::{parse_holds, parse_rows};
use pvsnap_native::{Error, Kind, detect, mountinfo};

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/zfs")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const LIST: &str = "zfs list -H -p -t snapshot -o name,creation -d 1 tank/data";

#[test]
fn openzfs_list_rows_split_at_tabs_only() {
    let rows = parse_rows(LIST, &fixture("list-snapshots.txt"), 2).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[1][0],
        "tank/data@pvsnap-keep-20231204T120500Z-0a1b2c3d"
    );
    assert_eq!(rows[1][1], "1701691500");
    // A space belongs to the name.
    let rows = parse_rows(LIST, &fixture("list-space-in-name.txt"), 2).unwrap();
    assert_eq!(
        rows[0][0],
        "tank/my data@pvsnap-keep-20231204T120500Z-0a1b2c3d"
    );
}

#[test]
fn missing_or_extra_columns_are_an_error_naming_the_command() {
    for f in ["list-missing-column.txt", "list-tab-in-name.txt"] {
        let e = parse_rows(LIST, &fixture(f), 2).unwrap_err();
        assert!(matches!(e, Error::Unparsed { .. }), "{f}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(LIST), "{f}: {msg}");
        assert!(
            msg.contains("expected 2 tab-separated columns"),
            "{f}: {msg}"
        );
    }
}

#[test]
fn openzfs_holds_give_snapshot_and_tag() {
    let holds = parse_holds("zfs holds -H", &fixture("holds.txt")).unwrap();
    assert_eq!(
        holds,
        vec![
            (
                "tank/data@pvsnap-read-20231204T120600Z-deadbeef".to_owned(),
                "pvsnap".to_owned()
            ),
            ("tank/data@daily".to_owned(), "keep".to_owned()),
        ]
    );
    let e = parse_holds("zfs holds -H", "tank/data@x\tpvsnap\n").unwrap_err();
    assert!(e.to_string().contains("zfs holds -H"), "{e}");
}

#[test]
fn both_zfs_mount_lines_place_a_folder_on_its_dataset() {
    for (file, mount, dataset) in [
        ("mountinfo-zfs-fuse.txt", "/tmp/zq/mnt", "pvtq31582"),
        (
            "mountinfo-zfs-fuse.txt",
            "/tmp/zq/c",
            "pvtq31582/pvsnap-tmp-x",
        ),
        (
            "mountinfo-openzfs.txt",
            "/var/snap/microk8s/common/default-storage",
            "tank/k8s",
        ),
        ("mountinfo-openzfs.txt", "/tank/my data", "tank/my data"),
    ] {
        let mounts = mountinfo::parse(&fixture(file)).unwrap();
        let path = Path::new(mount).join("pvc-1/data");
        let m = mountinfo::holding(&mounts, &path).expect(mount);
        let placed = detect::place_on(m, &path).expect(mount);
        assert_eq!(placed.volume.kind, Kind::Zfs, "{file} {mount}");
        assert_eq!(placed.volume.name, dataset, "{file} {mount}");
        assert_eq!(placed.within, Path::new("pvc-1/data"));
    }
}
