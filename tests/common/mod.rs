//! Shared helpers for the integration tests: run the real `mini-kvm` binary on the real
//! `/dev/kvm`, with a watchdog so that a hung guest fails the test instead of hanging CI.

#![allow(dead_code)]

pub mod mandelbrot;
pub mod os;
pub mod png;
pub mod terminal;
pub mod vga_text;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// No single mini-kvm run in the tests should take anywhere near this long.
pub const WATCHDOG: Duration = Duration::from_secs(120);

/// What a run printed and how it ended.
pub struct Run {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        )
    }
}

/// The tests run guests on the real KVM: without it they fail, loudly, rather than skip.
pub fn require_kvm() {
    let path = Path::new("/dev/kvm");
    assert!(
        path.exists(),
        "these tests run guests on the real /dev/kvm, and this machine has none: \
         enable hardware virtualization (or nested virtualization) and load kvm_intel/kvm_amd"
    );
    assert!(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .is_ok(),
        "these tests need read/write access to /dev/kvm: add your user to the kvm group"
    );
}

/// Set (to `1`) by the hardware-KVM rig's `/init` (tests/hw-kvm/init), and by nothing else:
/// only then are `MINI_KVM_BIN` and `MINI_KVM_TEST_GUESTS` honoured (docs/testing.md, "The
/// environment"). Anyone else's copies of those variables are ignored.
pub const RIG_MARKER: &str = "MINI_KVM_RIG";

/// The variables mini-kvm (or these helpers) read from the environment that a user's shell may
/// hold: every mini-kvm child starts without them, and a test that wants one sets it itself
/// (`Command::env` after [`mini_kvm_command`]).
pub const CALLER_VARIABLES: [&str; 8] = [
    "NO_COLOR",
    "KITTY_WINDOW_ID",
    "TERM_PROGRAM",
    "MINI_KVM_BIN",
    "MINI_KVM_TEST_GUESTS",
    "MINI_KVM_DEVICE",
    "MINI_KVM_RIG",
    "XDG_RUNTIME_DIR",
];

/// Whether the tests run inside the hardware-KVM rig (its `/init` sets [`RIG_MARKER`]). The rig
/// is kvm_amd under QEMU's nested SVM; a marker on any other host is a mistake, and fails.
pub fn in_rig() -> bool {
    let rig = std::env::var_os(RIG_MARKER).is_some_and(|value| value == "1");
    if rig {
        assert_eq!(
            host_kvm_module(),
            "kvm_amd",
            "{RIG_MARKER}=1 says this is the hardware-KVM rig (kvm_amd in QEMU), but it is not"
        );
    }
    rig
}

/// A path the rig gives in `variable`: required there, and it must exist.
fn rig_path(variable: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{RIG_MARKER}=1 but {variable} is not set"));
    assert!(
        path.exists(),
        "{variable}={} (the rig's copy) does not exist",
        path.display()
    );
    path
}

/// The mini-kvm binary under test: the one cargo built, or in the rig `MINI_KVM_BIN` (the rig
/// copies the binaries elsewhere).
pub fn mini_kvm_binary() -> String {
    if in_rig() {
        return rig_path("MINI_KVM_BIN").to_string_lossy().into_owned();
    }
    env!("CARGO_BIN_EXE_mini-kvm").to_string()
}

/// A command that runs the mini-kvm under test, without the caller's [`CALLER_VARIABLES`].
pub fn mini_kvm_command() -> Command {
    let mut command = Command::new(mini_kvm_binary());
    for variable in CALLER_VARIABLES {
        command.env_remove(variable);
    }
    command
}

/// Where build.rs's test guests are: its OUT_DIR, or in the rig `MINI_KVM_TEST_GUESTS`.
fn test_guest_dir() -> PathBuf {
    if in_rig() {
        return rig_path("MINI_KVM_TEST_GUESTS");
    }
    Path::new(env!("OUT_DIR")).join("test-guests")
}

/// A test-only guest built by build.rs from tests/guests/NAME.S.
pub fn test_guest(name: &str) -> PathBuf {
    let path = test_guest_dir().join(format!("{name}.bin"));
    assert!(path.exists(), "test guest {} was not built", path.display());
    path
}

/// A test kernel built by build.rs from tests/guests/kernels{32,64}/NAME.S, kept as an ELF file.
pub fn test_kernel(name: &str) -> PathBuf {
    let path = test_guest_dir().join(format!("{name}.elf"));
    assert!(
        path.exists(),
        "test kernel {} was not built",
        path.display()
    );
    path
}

/// A fresh directory for one test's files.
pub fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mini-kvm-test-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether the tests run as root, who may open any file (the permission tests then run
/// mini-kvm as `nobody`).
pub fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// Asserts a setup error: `status`, `message` on stderr, nothing on stdout, no panic.
pub fn assert_error(run: &Run, status: i32, message: &str) {
    assert_eq!(run.status, status, "{run:?}");
    assert!(
        run.stderr.contains(message),
        "stderr lacks {message:?}: {run:?}"
    );
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
}

/// Runs `mini-kvm ARGS` with `stdin` as its standard input.
pub fn mini_kvm(args: &[&str], stdin: &[u8]) -> Run {
    mini_kvm_with(mini_kvm_command().args(args), stdin)
}

/// Runs a prepared command (extra environment, another user...) with `stdin` as input.
pub fn mini_kvm_with(command: &mut Command, stdin: &[u8]) -> Run {
    run_watched(command, stdin, &mut |_, _| {})
}

/// Runs `command` with `stdin` as input under the watchdog, calling `tick` with its process ID
/// and the time since it started every few milliseconds while it runs (to signal it).
pub fn run_watched(
    command: &mut Command,
    stdin: &[u8],
    tick: &mut dyn FnMut(u32, Duration),
) -> Run {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let feeder = thread::spawn(move || {
        // The program may end without reading everything: a broken pipe is fine.
        let _ = input.write_all(&stdin);
    });
    let mut stdout_pipe = child.stdout.take().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stdout_reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout_pipe.read_to_end(&mut bytes);
        bytes
    });
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if started.elapsed() > WATCHDOG {
            let _ = child.kill();
            panic!("{command:?} hung for {WATCHDOG:?}: killed");
        }
        tick(child.id(), started.elapsed());
        thread::sleep(Duration::from_millis(5));
    };
    feeder.join().unwrap();
    Run {
        status: status
            .code()
            .unwrap_or_else(|| panic!("{command:?} killed by {status}")),
        stdout: stdout_reader.join().unwrap(),
        stderr: stderr_reader.join().unwrap(),
    }
}

/// Waits for `child` (started with stdio of the test's own choosing) under the watchdog: a
/// child still running after [`WATCHDOG`] is killed and the test fails, naming `what`.
pub fn wait_watched(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        if started.elapsed() > WATCHDOG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} hung for {WATCHDOG:?}: killed");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `command` (stdin from /dev/null) until what it printed on stdout satisfies `until`,
/// then stops it with SIGTERM: a test that waits for an event, not for a short `--timeout`.
/// Under the watchdog: a run that never gets there, or ends first, fails the test. Returns
/// stdout, and stderr as text.
pub fn run_until(command: &mut Command, until: impl Fn(&[u8]) -> bool) -> (Vec<u8>, String) {
    use std::os::unix::process::ExitStatusExt;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
    let mut stdout_pipe = child.stdout.take().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let shared = printed.clone();
    let stdout_reader = thread::spawn(move || {
        let mut chunk = [0u8; 65536];
        while let Ok(n @ 1..) = stdout_pipe.read(&mut chunk) {
            shared.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    // More than any test waits for: a run that prints this much without the event fails.
    const LIMIT: usize = 64 << 20;
    let started = Instant::now();
    loop {
        let (done, size) = {
            let bytes = printed.lock().unwrap();
            (until(&bytes), bytes.len())
        };
        if done {
            break;
        }
        if let Some(status) = child.try_wait().expect("wait for the child") {
            stdout_reader.join().unwrap();
            panic!(
                "{command:?} ended ({status}) before what the test waits for: {:?}",
                String::from_utf8_lossy(&printed.lock().unwrap())
            );
        }
        if started.elapsed() > WATCHDOG || size > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} did not print what the test waits for in {:?} ({size} bytes): killed",
                started.elapsed()
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: a signal to our own child, which has not been waited for yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = wait_watched(&mut child, &format!("{command:?}"));
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "{command:?}: {status}"
    );
    stdout_reader.join().unwrap();
    let stdout = std::mem::take(&mut *printed.lock().unwrap());
    (stdout, stderr_reader.join().unwrap())
}

/// The host's KVM module: kvm_pvm (emulated, our CI), kvm_intel or kvm_amd (hardware).
pub fn host_kvm_module() -> &'static str {
    ["kvm_pvm", "kvm_intel", "kvm_amd"]
        .into_iter()
        .find(|m| Path::new("/sys/module").join(m).exists())
        .unwrap_or("unknown")
}

/// The total from `--stats` ("VM exits of 'NAME': N").
pub fn total_exits(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|line| line.strip_prefix("VM exits of ")?.split(": ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no exit total in --stats output:\n{stderr}"))
}

/// Fails, showing `text`, unless it contains every one of `needles`.
pub fn assert_contains_all(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
}

/// The first number after `label` on the `--stats` line that starts with it.
pub fn stats_value(stats: &str, label: &str) -> f64 {
    stats
        .lines()
        .find_map(|line| line.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no number for {label:?} in:\n{stats}"))
}

/// The release a bzImage says it is (what its `uname -r` prints): the first word of the version
/// string its setup header points at (field `kernel_version` at 0x20e, an offset from 0x200).
pub fn kernel_release(image: &[u8]) -> String {
    let pointer = u16::from_le_bytes([image[0x20e], image[0x20f]]) as usize + 0x200;
    let text = &image[pointer..];
    let end = text
        .iter()
        .position(|&byte| byte == b' ' || byte == 0)
        .unwrap();
    String::from_utf8_lossy(&text[..end]).into_owned()
}
