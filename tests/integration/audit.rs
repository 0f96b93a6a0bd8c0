//! The audit trail through the binary: one entry per source with its
//! outcome, failures recorded, verify finds removals and alterations.

use crate::util::{Env, code, stdout};

fn entries(env: &Env, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["audit", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_slice(&env.ok(&args).stdout).unwrap()
}

#[test]
fn snapshot_records_each_source_and_failures_and_verify_finds_a_removal() {
    let env = Env::new();
    env.init();
    let good = env.path("good");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::write(good.join("f"), b"hello").unwrap();
    let missing = env.path("missing");
    // One good source and one that does not exist: exit 1, two entries.
    let out = env.run(&[
        "snapshot",
        good.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let e = entries(&env, &["--operation", "snapshot"]);
    assert_eq!(e.len(), 2, "{e:?}");
    let ok = e
        .iter()
        .find(|x| x["outcome"] == "ok")
        .expect("an ok entry");
    assert_eq!(ok["source"], good.to_str().unwrap());
    assert_eq!(ok["snapshots"].as_array().unwrap().len(), 1);
    let failed = e
        .iter()
        .find(|x| x["outcome"] == "failed")
        .expect("a failed entry");
    assert_eq!(failed["source"], missing.to_str().unwrap());
    assert!(failed["snapshots"].as_array().unwrap().is_empty());
    assert!(ok["uid"].is_u64() && ok["host"].is_string() && ok["version"].is_string());
    // A failing forget is recorded with its error.
    code(&env, &["forget", "deadbeef"], 1);
    let f = entries(&env, &["--operation", "forget"]);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["outcome"], "failed");
    assert!(
        f[0]["error"].as_str().unwrap().contains("deadbeef"),
        "{f:?}"
    );
    // Reading commands record nothing.
    env.ok(&["snapshots"]);
    assert_eq!(entries(&env, &[]).len(), 3, "2 snapshot, forget");
    assert!(stdout(&env.ok(&["audit", "verify"])).contains("intact"));
    // Remove a middle entry: verify reports the gap, exit 4.
    let all = entries(&env, &[]);
    let middle = all[1]["id"].as_str().unwrap();
    std::fs::remove_file(env.repo().join("audit").join(middle)).unwrap();
    let out = code(&env, &["audit", "verify"], 4);
    assert!(
        stdout(&out).contains(&format!("gap: audit/{middle}")),
        "{}",
        stdout(&out)
    );
    // Alter another: verify names it.
    let first = all[0]["id"].as_str().unwrap();
    let p = env.repo().join("audit").join(first);
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len() - 2;
    b[n] ^= 0x20;
    std::fs::write(&p, b).unwrap();
    let out = code(&env, &["audit", "verify"], 4);
    assert!(
        stdout(&out).contains(&format!("altered: audit/{first}")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn audit_forget_removes_old_entries_and_verify_stays_clean() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    env.snapshot(&src, &[]);
    assert_eq!(entries(&env, &[]).len(), 1);
    env.ok(&["audit", "forget", "--older-than", "0"]);
    let e = entries(&env, &[]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0]["operation"], "audit forget");
    assert_eq!(e[0]["forgotten"].as_array().unwrap().len(), 1);
    env.ok(&["audit", "verify"]);
    assert!(entries(&env, &["--since", "2999-01-01T00:00:00Z"]).is_empty());
}
