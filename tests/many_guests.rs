//! 32 guests in one process, through the library: all complete with the right output, and the
//! run leaves no threads or file descriptors behind. (Alone in this file: the counts of
//! /proc/self/fd and /proc/self/task would see the threads of other tests.)

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use mini_kvm::config::{GuestImage, RunConfig};
use mini_kvm::console::{GuestInput, SharedSink};
use mini_kvm::vmm::outcome::GuestOutcome;

fn count_entries(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// The number of this process's threads once the count has stopped changing: a thread that has
/// been joined can stay listed in /proc/self/task for a moment while the kernel finishes its
/// exit (seen on slow machines).
fn settled_thread_count() -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut count = count_entries("/proc/self/task");
    while std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = count_entries("/proc/self/task");
        if now == count {
            break;
        }
        count = now;
    }
    count
}

/// The names of this process's threads, to say which one leaked.
fn thread_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn thirty_two_matrix_guests_at_once_leak_nothing() {
    common::require_kvm();
    let run_once = || {
        let config = RunConfig::new(
            (0..32)
                .map(|_| GuestImage::resolve("matrix").unwrap())
                .collect(),
        );
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink: SharedSink = buffer.clone();
        let consoles = mini_kvm::shared_consoles(&config, sink, GuestInput::none());
        let results = mini_kvm::run_guests(&config, consoles, &AtomicBool::new(false)).unwrap();
        let output = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        (results, output)
    };
    // A first run sets up what stays for the process's life (the kick-signal handler, the stdout
    // lock, ...); the leak check compares the second run's before and after.
    run_once();
    let fds_before = count_entries("/proc/self/fd");
    let threads_before = settled_thread_count();
    let names_before = thread_names();

    let (results, output) = run_once();

    assert_eq!(results.len(), 32);
    for (index, result) in results.iter().enumerate() {
        let report = result.report.as_ref().expect("guest ran");
        assert!(
            matches!(report.outcome, GuestOutcome::Exited(0)),
            "guest {} did not exit 0",
            index + 1
        );
        let label = format!("[{}:matrix] ", index + 1);
        let lines: Vec<&str> = output
            .lines()
            .filter_map(|line| line.strip_prefix(&label))
            .collect();
        assert_eq!(
            lines,
            [
                "Matrix 8x8 multiplication",
                "C[0][0] = 162",
                "C[7][7] = 198",
                "sum = 16632"
            ],
            "guest {}",
            index + 1
        );
    }
    assert_eq!(output.lines().count(), 32 * 4, "{output}");

    assert_eq!(
        count_entries("/proc/self/fd"),
        fds_before,
        "file descriptors leaked"
    );
    assert_eq!(
        settled_thread_count(),
        threads_before,
        "threads leaked: before {names_before:?}, after {:?}",
        thread_names()
    );
}
