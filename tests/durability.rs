//! No data lost (docs/virtio.md, "Durability"): what the teaching OS says it wrote is in the
//! image even when mini-kvm is killed with SIGKILL right after; a host disk that fills up gives
//! the guest an I/O error, which its shell reports, and the guest goes on; an image truncated
//! or deleted under the running guest is reported on stderr, once, and the guest goes on.
//!
//! Each test drives the OS's shell line by line: it types a line, waits until the shell has
//! printed the whole answer and its menu again, and only then does what the host does next
//! (kill mini-kvm, fill the disk, truncate the image). Nothing waits for a time.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::os::{GOODBYE, MENU};
use common::{WATCHDOG, mini_kvm_command, require_kvm, scratch, wait_watched};

const IO_ERROR: &str = "the disk failed (I/O error)\n";
/// Menu 8's output: a command that needs no disk, to show that the guest goes on.
const GCD: &str = "\n=== GCD (Greatest Common Divisor) ===\nExamples of Euclidean algorithm:\n\n\
    GCD(48, 18) = 6\nGCD(100, 75) = 25\nGCD(123, 456) = 3\nGCD(17, 19) = 1\nGCD(1071, 462) = 21\n";

/// A running mini-kvm whose shell the test types into, one line at a time.
struct Shell {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// What stdout must be so far: the menu, then each typed line, its output and the menu.
    expected: String,
}

/// Reads `pipe` into `into` until it closes.
fn collect(mut pipe: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) {
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut chunk) {
            into.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
}

impl Shell {
    /// Starts `command` (mini-kvm running the OS) and waits for the shell's first menu.
    fn start(command: &mut Command) -> Shell {
        require_kvm();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), stdout.clone());
        collect(child.stderr.take().unwrap(), stderr.clone());
        let mut shell = Shell {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            expected: String::new(),
        };
        shell.expect(MENU);
        shell
    }

    /// Types `line`; waits until the shell has echoed it, printed exactly `output` and shown
    /// its menu again (so the command is over: for `write`, its data flushed).
    fn type_line(&mut self, line: &str, output: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        self.expect(&format!("{line}\n{output}{MENU}"));
    }

    /// Waits until stdout is what it was expected to be, and `text` after it.
    fn expect(&mut self, text: &str) {
        self.expected.push_str(text);
        let started = Instant::now();
        loop {
            let printed = String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned();
            if printed == self.expected {
                return;
            }
            let parted = !self.expected.starts_with(printed.as_str());
            if parted || started.elapsed() > WATCHDOG || self.child.try_wait().unwrap().is_some() {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the shell did not print what was expected\n--- got ---\n{printed:?}\n\
                     --- expected ---\n{:?}\n--- stderr ---\n{}",
                    self.expected,
                    self.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Ends the input: the shell says goodbye and mini-kvm exits, with status 0; returns what
    /// it printed on stderr.
    fn finish(mut self) -> String {
        self.stdin = None;
        let status = wait_watched(&mut self.child, "mini-kvm");
        // The readers get the last bytes once the pipes close; wait for the goodbye.
        self.expect(GOODBYE);
        assert_eq!(status.code(), Some(0), "{}", self.stderr_text());
        self.stderr_text()
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

/// `mini-kvm run --disk DISK os`.
fn os_with_disk(disk: &Path) -> Command {
    let mut command = mini_kvm_command();
    command.args([
        "run",
        "--timeout",
        "300",
        "--disk",
        disk.to_str().unwrap(),
        "os",
    ]);
    command
}

/// A zeroed (sparse) image of 1 MiB: an empty tar archive.
fn empty_image(dir: &Path) -> PathBuf {
    let path = dir.join("disk.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    path
}

/// The file `name` in the tar archive `image`, as the host's `tar` extracts it.
fn host_tar_file(image: &Path, name: &str) -> Vec<u8> {
    let output = Command::new("tar")
        .arg("-xOf")
        .arg(image)
        .arg(name)
        .output()
        .expect("run the host's tar");
    assert!(output.status.success(), "tar -xOf {name}: {output:?}");
    output.stdout
}

#[test]
fn what_the_shell_said_it_wrote_is_in_the_image_after_a_sigkill() {
    use std::os::unix::process::ExitStatusExt;
    let dir = scratch("durability-sigkill");
    let disk = empty_image(&dir);
    let mut shell = Shell::start(&mut os_with_disk(&disk));
    shell.type_line("write first.txt kept", "wrote 5 bytes to first.txt\n");
    shell.type_line(
        "write second.txt every flushed byte",
        "wrote 19 bytes to second.txt\n",
    );
    // The shell has said so: the write and its flush are done. Kill at once, no goodbye.
    // SAFETY: a signal to our own child, not waited for yet.
    unsafe { libc::kill(shell.child.id() as libc::pid_t, libc::SIGKILL) };
    let status = wait_watched(&mut shell.child, "mini-kvm");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert_eq!(host_tar_file(&disk, "first.txt"), b"kept\n");
    assert_eq!(host_tar_file(&disk, "second.txt"), b"every flushed byte\n");
}

/// The message mini-kvm prints once for `trouble` with the image `disk`.
fn trouble_message(disk: &Path, trouble: &str) -> String {
    format!(
        "mini-kvm: virtio-blk: the disk image {}: {trouble}; the guest gets I/O errors \
         (said once)\n",
        disk.display()
    )
}

#[test]
fn a_host_disk_that_fills_up_is_an_io_error_for_the_guest_which_goes_on() {
    assert!(
        common::is_root(),
        "this test mounts a small tmpfs (in a mount namespace of its own): run it as root"
    );
    let dir = scratch("durability-full");
    // The image's directory, on a 1 MiB tmpfs that only mini-kvm's mount namespace sees: it
    // goes away with mini-kvm. The image is sparse: it takes no room on it yet. (busybox's
    // unshare and truncate do this too: the rig runs the test.)
    let small = dir.join("small");
    std::fs::create_dir(&small).unwrap();
    let disk = small.join("disk.img");
    let script = format!(
        "mount -t tmpfs -o size=1m mini-kvm-test '{small}' && truncate -s 1048576 '{disk}' && \
         exec \"$@\"",
        small = small.display(),
        disk = disk.display()
    );
    let mut command = Command::new("unshare");
    command.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ]);
    let mini_kvm = os_with_disk(&disk);
    command
        .arg(mini_kvm.get_program())
        .args(mini_kvm.get_args());
    let mut shell = Shell::start(&mut command);
    // The test reaches the tmpfs through mini-kvm's own view of the file system.
    let inside = PathBuf::from(format!(
        "/proc/{}/root{}",
        shell.child.id(),
        small.display()
    ));
    let filler = inside.join("filler");
    fill(&filler);
    // Every block of the image is still a hole: the first write needs room, and has none.
    shell.type_line("write a lost", &format!("write: {IO_ERROR}"));
    shell.type_line("write a lost again", &format!("write: {IO_ERROR}"));
    shell.type_line("ls", "ls: no files yet (write NAME TEXT makes one)\n");
    shell.type_line("8", GCD);
    // Room again: the next write works.
    std::fs::remove_file(&filler).unwrap();
    shell.type_line("write b kept", "wrote 5 bytes to b\n");
    shell.type_line("ls", "       5  b\n");
    shell.type_line("cat b", "kept\n");
    let stderr = shell.finish();
    assert_eq!(
        stderr,
        trouble_message(
            &disk,
            "a write failed: No space left on device (os error 28)"
        )
    );
}

/// Fills the file system `path` is on with the file `path`, to the last byte.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let block = [0xffu8; 4096];
    loop {
        match file.write(&block) {
            Ok(0) => panic!("{} would not fill up", path.display()),
            Ok(_) => {}
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => return,
            Err(error) => panic!("filling {}: {error}", path.display()),
        }
    }
}

#[test]
fn an_image_truncated_under_the_guest_gives_io_errors_past_its_new_end() {
    let dir = scratch("durability-truncated");
    let disk = empty_image(&dir);
    let mut shell = Shell::start(&mut os_with_disk(&disk));
    shell.type_line("write a first", "wrote 6 bytes to a\n");
    shell.type_line("cat a", "first\n");
    // One sector left: a's header. Its data and the archive's end are past the new end, and
    // a read there gets an I/O error, not zeros.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(512)
        .unwrap();
    shell.type_line("cat a", &format!("cat: {IO_ERROR}"));
    shell.type_line("ls", &format!("ls: {IO_ERROR}"));
    shell.type_line("write b x", &format!("write: {IO_ERROR}"));
    shell.type_line("8", GCD);
    let stderr = shell.finish();
    assert_eq!(
        stderr,
        trouble_message(
            &disk,
            "it shrank under the running guest, to 512 bytes from 1048576: requests past its \
             end fail"
        )
    );
    // Nothing grew it back.
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 512);
}

#[test]
fn an_image_deleted_under_the_guest_is_reported_and_its_writes_fail() {
    let dir = scratch("durability-deleted");
    let disk = empty_image(&dir);
    let mut shell = Shell::start(&mut os_with_disk(&disk));
    shell.type_line("write a first", "wrote 6 bytes to a\n");
    std::fs::remove_file(&disk).unwrap();
    // What it holds can still be read (mini-kvm keeps it open), but a write would be lost.
    shell.type_line("cat a", "first\n");
    shell.type_line("write b x", &format!("write: {IO_ERROR}"));
    shell.type_line("write b y", &format!("write: {IO_ERROR}"));
    shell.type_line("ls", "       6  a\n");
    shell.type_line("8", GCD);
    let stderr = shell.finish();
    assert_eq!(
        stderr,
        trouble_message(
            &disk,
            "it was deleted under the running guest: writes and flushes fail (what it holds \
             is lost when mini-kvm ends)"
        )
    );
}
