//! The hidden `loopbench kernel-rr-worker` subcommand, driven as `rr`
//! drives it: over its stdin and stdout (see `scenarios::kworkers`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const EXE: &str = env!("CARGO_BIN_EXE_loopbench");

#[test]
fn bad_arguments_exit_non_zero_with_a_message() {
    for args in [
        &["kernel-rr-worker", "--conns", "many"][..],
        &["kernel-rr-worker", "--conns", "0"][..],
        &["kernel-rr-worker", "--conns", "1099511627776"][..],
        &["kernel-rr-worker", "--conns", "18446744073709551615"][..],
    ] {
        let out = Command::new(EXE)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}: {}", out.status);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.trim().is_empty(), "{args:?}: no message");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: said something on stdout");
    }
    let out = Command::new(EXE)
        .args(["kernel-rr-worker", "--conns", "1099511627776"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("RLIMIT_NOFILE"));
}

#[test]
fn a_worker_opens_runs_and_quits() {
    let mut child = Command::new(EXE)
        .args(["kernel-rr-worker", "--conns", "40"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready 40");
    stdin.write_all(b"run 50\n").unwrap();
    let done = lines.next().unwrap().unwrap();
    let words: Vec<&str> = done.split(' ').collect();
    assert_eq!(words[0], "done", "{done}");
    assert!(words[1].parse::<u64>().unwrap() > 0, "{done}");
    assert!(words[2].parse::<u64>().unwrap() >= 50_000_000, "{done}");
    assert!(words[3].parse::<u64>().unwrap() > 0, "{done}");
    stdin.write_all(b"quit\n").unwrap();
    assert!(lines.next().is_none());
    assert!(child.wait().unwrap().success());
}

#[test]
fn an_unknown_command_ends_the_worker_with_an_error() {
    let out = {
        let mut child = Command::new(EXE)
            .args(["kernel-rr-worker", "--conns", "4"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"fly\n").unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready 4\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown command"));
}
