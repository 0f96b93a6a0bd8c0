//! The restore workflows against the fake API server and a real repository:
//! what they change in the cluster and on disk, and what they refuse.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pvsnap_engine::backend::memory::MemoryBackend;
use pvsnap_engine::backup::{self, BackupOptions, Progress};
use pvsnap_engine::repo::InitOptions;
use pvsnap_engine::restore::RestoreOptions;
use pvsnap_engine::snapshot::Snapshot;
use pvsnap_engine::{IndexedRepository, Repository};
use pvsnap_k8s::testing::fake::{FakeCluster, Kind};
use pvsnap_k8s::testing::fixtures::{DATA_UID, NODE, STORAGE_ROOT, hostpath_dir};
use pvsnap_k8s::{ClaimRef, Cluster, ResolveOptions};
use pvsnap_ops::{
    CloneOptions, Cloned, Error, InPlaceOptions, PRE_RESTORE_TAG, Quiet, prepare_in_place,
    restore_in_place, restore_to_new_claim,
};

/// A repository holding one snapshot of a small folder, and a host root
/// under which the node's storage folder lives.
struct World {
    repo: IndexedRepository,
    snap: Snapshot,
    host_root: tempfile::TempDir,
    fake: FakeCluster,
}

async fn world() -> World {
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("a/b")).unwrap();
    std::fs::write(src.path().join("top.txt"), b"top").unwrap();
    std::fs::write(src.path().join("a/b/deep.bin"), vec![7u8; 300_000]).unwrap();
    let backend = Arc::new(MemoryBackend::new());
    let mut repo = Repository::init(backend, InitOptions::default())
        .unwrap()
        .load_index()
        .unwrap();
    let snap = backup::backup(
        &mut repo,
        src.path(),
        &BackupOptions::default(),
        &Progress::default(),
    )
    .unwrap()
    .snapshot;
    World {
        repo,
        snap,
        host_root: tempfile::tempdir().unwrap(),
        fake: FakeCluster::with_fixtures().await,
    }
}

impl World {
    fn resolve(&self) -> ResolveOptions {
        ResolveOptions {
            node_name: NODE.into(),
            host_root: Some(self.host_root.path().to_path_buf()),
        }
    }

    fn clone_options(&self) -> CloneOptions {
        CloneOptions {
            storage_dir: STORAGE_ROOT.into(),
            storage_class: None,
            node: NODE.into(),
            resolve: self.resolve(),
            subpath: None,
            restore: RestoreOptions::default(),
        }
    }

    /// The snapshot restored into a new claim `default/NAME`.
    async fn clone_to(&self, cluster: &Cluster, name: &str) -> Result<Cloned, Error> {
        restore_to_new_claim(
            &self.repo,
            cluster,
            &claim("default", name),
            &self.snap,
            &self.clone_options(),
            &Quiet,
        )
        .await
    }

    /// A host path as this test sees it.
    fn local(&self, host_path: &str) -> PathBuf {
        self.host_root
            .path()
            .join(host_path.trim_start_matches('/'))
    }
}

fn claim(ns: &str, name: &str) -> ClaimRef {
    ClaimRef {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[tokio::test]
async fn a_clone_restores_the_data_then_binds_a_new_claim_to_it() {
    let w = world().await;
    let cluster = w.fake.connect().await;
    let made = w.clone_to(&cluster, "data-copy").await.unwrap();
    assert_eq!(read(&made.local_dir.join("top.txt")), b"top");
    assert_eq!(
        read(&made.local_dir.join("a/b/deep.bin")),
        vec![7u8; 300_000]
    );
    assert!(made.local_dir.starts_with(w.host_root.path()));
    assert_eq!(made.summary.files, 2);
    // A snapshot of a folder records no capacity: the clone gets whole GiB.
    assert_eq!(made.target.capacity, "1Gi");
    let pvc = w
        .fake
        .get(Kind::PersistentVolumeClaim, "default", "data-copy")
        .expect("the claim was created");
    assert_eq!(pvc["spec"]["volumeName"], made.target.pv);
    let pv = w
        .fake
        .get(Kind::PersistentVolume, "", &made.target.pv)
        .unwrap();
    assert_eq!(
        Path::new(pv["spec"]["hostPath"]["path"].as_str().unwrap()),
        made.target.host_dir
    );
}

#[tokio::test]
async fn a_clone_onto_an_existing_claim_or_a_full_folder_changes_nothing() {
    let w = world().await;
    let cluster = w.fake.connect().await;
    let before = w.fake.requests().len();
    let err = w.clone_to(&cluster, "data").await.unwrap_err();
    assert!(matches!(err, Error::ClaimExists { .. }), "{err}");
    assert!(err.to_string().contains("default/data already exists"));
    let writes = w.fake.requests()[before..]
        .iter()
        .filter(|r| !r.starts_with("GET"))
        .cloned()
        .collect::<Vec<_>>();
    assert!(writes.is_empty(), "{writes:?}");

    // Something already in the folder the data would go into.
    let pv = pvsnap_k8s::clone_volume_name("default", "fresh");
    let dir = w.local(&format!("{STORAGE_ROOT}/default-fresh-{pv}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keep.txt"), b"mine").unwrap();
    let err = w.clone_to(&cluster, "fresh").await.unwrap_err();
    assert!(matches!(err, Error::CloneFolderNotEmpty { .. }), "{err}");
    assert_eq!(read(&dir.join("keep.txt")), b"mine");
    assert!(!dir.join("top.txt").exists());
    assert!(
        w.fake
            .get(Kind::PersistentVolumeClaim, "default", "fresh")
            .is_none()
    );

    let err = w.clone_to(&cluster, "Bad_Name").await.unwrap_err();
    assert!(matches!(err, Error::InvalidClaimName { .. }), "{err}");
}

#[tokio::test]
async fn an_in_place_restore_keeps_the_old_content_and_scales_back() {
    let mut w = world().await;
    let cluster = w.fake.connect().await;
    let volume = w.local(&hostpath_dir("default", "data", DATA_UID));
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::write(volume.join("top.txt"), b"changed since").unwrap();
    std::fs::write(volume.join("extra.txt"), b"not in the snapshot").unwrap();

    let target = prepare_in_place(&cluster, &claim("default", "data"), &w.resolve())
        .await
        .unwrap();
    assert!(
        target.workloads.iter().any(|x| x.name == "web"),
        "{:?}",
        target.workloads
    );
    let options = InPlaceOptions {
        wait_timeout: Duration::from_secs(30),
        stop: Default::default(),
    };
    let done = restore_in_place(&mut w.repo, &cluster, &w.snap, &target, &options, &Quiet)
        .await
        .unwrap();
    done.restored.unwrap();
    assert!(done.scaled_back.is_done(), "{:?}", done.scaled_back);

    assert_eq!(read(&volume.join("top.txt")), b"top");
    assert_eq!(read(&volume.join("a/b/deep.bin")), vec![7u8; 300_000]);
    assert!(!volume.join("extra.txt").exists(), "extra entries go");
    let safety = done.safety.expect("a safety snapshot was taken");
    assert_eq!(safety.tags, vec![PRE_RESTORE_TAG.to_string()]);
    let web = w.fake.get(Kind::Deployment, "default", "web").unwrap();
    assert_eq!(web["spec"]["replicas"], 2, "scaled back to its count");

    // The safety snapshot holds the content from before, extra file included.
    let back = tempfile::tempdir().unwrap();
    pvsnap_engine::restore::restore(
        &w.repo,
        &safety,
        None,
        back.path(),
        &RestoreOptions::default(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(read(&back.path().join("top.txt")), b"changed since");
    assert_eq!(read(&back.path().join("extra.txt")), b"not in the snapshot");
}
