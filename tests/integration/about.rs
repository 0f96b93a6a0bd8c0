//! `pvsnap version` and `pvsnap completion SHELL`.

use std::process::Command;

use crate::util::Env;

fn pvsnap(args: &[&str]) -> std::process::Output {
    Env::new().cmd().args(args).output().expect("run pvsnap")
}

#[test]
fn version_names_the_release_the_repository_version_and_the_build() {
    let out = pvsnap(&["version"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!(
            "pvsnap {} (repository version 1; commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    let out = pvsnap(&["version", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["repository_version"], 1);
    for field in ["commit", "profile", "target"] {
        assert!(v[field].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    }
}

#[test]
fn bash_completion_completes_subcommands_and_flags() {
    let out = pvsnap(&["completion", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    // Ask bash itself what `pvsnap res<TAB>` and `pvsnap restore --ta<TAB>` offer.
    let ask = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let program = format!(
            "{script}\nCOMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{line}'; \
             COMP_POINT=${{#COMP_LINE}}; _pvsnap pvsnap '{cur}' '{prev}'; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            words = words.join(" "),
            cword = words.len() - 1,
            cur = words[words.len() - 1],
            prev = words[words.len() - 2],
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(program)
            .output()
            .expect("bash");
        String::from_utf8(out.stdout).unwrap()
    };
    let got = ask("pvsnap res");
    assert!(got.lines().any(|l| l == "restore"), "{got}");
    assert!(!got.lines().any(|l| l == "snapshot"), "{got}");
    let got = ask("pvsnap restore --ta");
    assert!(got.lines().any(|l| l == "--target"), "{got}");
}

#[test]
fn other_shells_get_their_own_script_and_unknown_ones_are_refused() {
    for (shell, marker) in [("zsh", "#compdef pvsnap"), ("fish", "complete -c pvsnap")] {
        let out = pvsnap(&["completion", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script:.200}");
        assert!(script.contains("restore"), "{shell}");
    }
    let out = pvsnap(&["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("possible values: bash"), "{err}");
}

#[test]
fn printing_commands_end_quietly_when_their_reader_is_gone() {
    use std::os::fd::FromRawFd;
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), b"x").unwrap();
    env.snapshot(&src, &[]);
    for args in [
        &["stats"][..],
        &["snapshots"],
        &["ls", "latest"],
        &["diff", "latest", "latest"],
        &["dump", "latest", "/a"],
        &["version"],
        &["completion", "bash"],
    ] {
        // A pipe whose reader is already gone (`pvsnap stats | true`): the
        // first write fails with EPIPE.
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        unsafe { libc::close(fds[0]) };
        let writer = unsafe { std::fs::File::from_raw_fd(fds[1]) };
        let out = env
            .cmd()
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}
