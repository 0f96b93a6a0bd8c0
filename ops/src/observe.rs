//! What a workflow tells its caller while it runs.

use std::sync::Arc;

use pvsnap_engine::backup::Progress;
use pvsnap_engine::restore::RestoreProgress;
use pvsnap_engine::snapshot::Snapshot;
use pvsnap_k8s::Workload;

/// Held while a stage runs and dropped when it ends (a progress display).
pub type Watch = Box<dyn std::any::Any>;

/// Events of a workflow, in the order they happen. Every method does
/// nothing by default.
pub trait Observer {
    /// A snapshot starts reading a source; the counters move until the
    /// returned watch is dropped, when its data is stored.
    fn storing(&self, progress: Arc<Progress>) -> Watch {
        let _ = progress;
        Box::new(())
    }

    /// A restore starts writing; the counters move until the returned
    /// watch is dropped.
    fn restoring(&self, progress: Arc<RestoreProgress>) -> Watch {
        let _ = progress;
        Box::new(())
    }

    /// The claim's workloads were scaled to zero; these are their counts
    /// from before.
    fn scaled_down(&self, originals: &[Workload]) {
        let _ = originals;
    }

    /// The volume's content from before the restore is kept in `snapshot`.
    fn kept(&self, snapshot: &Snapshot) {
        let _ = snapshot;
    }

    /// Something the user should know about `what` (a source, a volume)
    /// that does not stop the workflow: a live read instead of a native
    /// snapshot, a nested subvolume left out, a leftover removed.
    fn note(&self, what: &str, text: &str) {
        let _ = (what, text);
    }

    /// A VolumeSnapshot (`NAMESPACE/NAME`) that a killed run made and never
    /// recorded was removed.
    fn csi_leftover_removed(&self, snapshot: &str) {
        let _ = snapshot;
    }

    /// The workloads are back at their counts from before.
    fn scaled_back(&self, originals: &[Workload]) {
        let _ = originals;
    }
}

/// An observer that shows nothing.
pub struct Quiet;

impl Observer for Quiet {}
