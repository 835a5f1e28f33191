//! `--gdb`: the real gdb (Debian's, in batch mode) debugging guests through mini-kvm's stub, on
//! the real /dev/kvm. What the host's KVM can do for a debugger differs (docs/gdb.md): on kvm_pvm
//! breakpoints go into debug registers, in the hardware-KVM rig (QEMU's nested SVM) they are found
//! by single-stepping; the stub says which when gdb attaches, and that line is pinned for each
//! host the tests know (`expected_support`; any other host fails).
//!
//! Each session starts `mini-kvm run --gdb ...` (a Unix socket in a private directory), reads
//! the socket's path from its first line on stderr, and points `gdb -batch` at it. What gdb prints is asserted
//! through `printf` where gdb's own wording could change between versions.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::{Run, mini_kvm, mini_kvm_command, require_kvm, run_watched, scratch, test_guest};

/// No gdb session in these tests takes anywhere near this long.
const WATCHDOG: Duration = Duration::from_secs(120);

/// gdb, or a clear failure saying how to get it.
fn require_gdb() {
    let found = Command::new("gdb")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "these tests drive the real gdb, and this machine has none: apt-get install gdb"
    );
}

/// A mini-kvm run waiting for gdb.
struct Guest {
    child: Child,
    /// Where gdb connects (`target remote` takes it as is).
    target: String,
    stderr_lines: mpsc::Receiver<String>,
    /// The stderr lines read so far.
    stderr: Vec<String>,
    stdout: thread::JoinHandle<Vec<u8>>,
    /// Set once the guest has printed something.
    printed: Arc<AtomicBool>,
}

impl Guest {
    /// Starts `mini-kvm run --gdb[=ADDRESS] ARGS...` (`--gdb` alone for an empty ADDRESS: a
    /// private socket) and waits for its "waits for gdb" line.
    fn start(address: &str, args: &[&str]) -> Guest {
        Guest::start_with(&mut mini_kvm_command(), address, args)
    }

    /// [`Guest::start`] with a command prepared by the caller (a umask, say).
    fn start_with(command: &mut Command, address: &str, args: &[&str]) -> Guest {
        require_kvm();
        require_gdb();
        let gdb_option = match address {
            "" => "--gdb".to_string(),
            address => format!("--gdb={address}"),
        };
        let mut child = command
            .args(["run", &gdb_option])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mini-kvm");
        let mut out = child.stdout.take().unwrap();
        let printed = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&printed);
        let stdout = thread::spawn(move || {
            let mut bytes = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(read) = out.read(&mut chunk) {
                if read == 0 {
                    break;
                }
                bytes.extend_from_slice(&chunk[..read]);
                seen.store(true, Ordering::Release);
            }
            bytes
        });
        let err = child.stderr.take().unwrap();
        let (send, stderr_lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let mut guest = Guest {
            child,
            target: String::new(),
            stderr_lines,
            stderr: Vec::new(),
            stdout,
            printed,
        };
        let banner = guest.next_stderr_line();
        guest.target = banner
            .split(" waits for gdb on ")
            .nth(1)
            .and_then(|rest| rest.split(": gdb").next())
            .unwrap_or_else(|| panic!("no 'waits for gdb' line: {banner:?}"))
            .to_string();
        guest
    }

    fn next_stderr_line(&mut self) -> String {
        let line = self
            .stderr_lines
            .recv_timeout(WATCHDOG)
            .unwrap_or_else(|_| panic!("mini-kvm said nothing more on stderr: {:?}", self.stderr));
        self.stderr.push(line.clone());
        line
    }

    /// Runs `gdb -batch` on this guest: `file` first (symbols), then the commands.
    fn gdb(&self, file: Option<&Path>, commands: &[&str]) -> GdbRun {
        gdb(&self.target, file, commands, None)
    }

    /// Waits for mini-kvm to end: its status, stdout and whole stderr.
    fn finish(mut self) -> Run {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > WATCHDOG {
                let _ = self.child.kill();
                panic!("mini-kvm hung after gdb: {:?}", self.stderr);
            }
            thread::sleep(Duration::from_millis(10));
        };
        while let Ok(line) = self.stderr_lines.recv_timeout(Duration::from_secs(5)) {
            self.stderr.push(line);
        }
        Run {
            status: status.code().expect("mini-kvm ended by a signal"),
            stdout: self.stdout.join().unwrap(),
            stderr: self.stderr.iter().map(|line| format!("{line}\n")).collect(),
        }
    }
}

struct GdbRun {
    status: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for GdbRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gdb status {}\n--- gdb stdout ---\n{}\n--- gdb stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// `gdb -batch -nx [FILE] -ex 'target remote TARGET' -ex COMMAND...` (no `target remote` for an
/// empty TARGET), under the watchdog; gdb gets a SIGINT, as from Ctrl-C in its terminal, once
/// `interrupt` says so.
fn gdb(
    target: &str,
    file: Option<&Path>,
    commands: &[&str],
    interrupt: Option<&dyn Fn() -> bool>,
) -> GdbRun {
    let mut command = Command::new("gdb");
    command.args(["-batch", "-nx"]);
    if let Some(file) = file {
        command.arg(file);
    }
    // No target: gdb only reads the file.
    if !target.is_empty() {
        command.args(["-ex", &format!("target remote {target}")]);
    }
    for line in commands {
        command.args(["-ex", line]);
    }
    let mut interrupt = interrupt;
    let run = run_watched(&mut command, b"", &mut |pid, _| {
        if interrupt.is_some_and(|now| now()) {
            interrupt = None;
            // SAFETY: kill has no memory preconditions; the pid is our child's, not reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
        }
    });
    GdbRun {
        status: run.status,
        stdout: run.stdout_text(),
        stderr: run.stderr,
    }
}

/// The lines of `text` that gdb's `printf`s made (they start with "= ").
fn printed(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| line.strip_prefix("= "))
        .collect()
}

/// What the stub must say of this host when gdb attaches (docs/gdb.md: tried in scratch VMs).
/// Each host we know is pinned; on any other the tests fail rather than accept what they get.
fn expected_support() -> &'static str {
    match (common::host_kvm_module(), common::in_rig()) {
        // KVM's instruction emulator checks DR7 before each instruction, but no data breakpoint.
        ("kvm_pvm", false) => {
            "breakpoints: debug registers, then single-stepping; watchpoints: none"
        }
        // The rig: QEMU's nested SVM stops neither at int3 nor at a debug register.
        ("kvm_amd", true) => "breakpoints: single-stepping; watchpoints: none",
        // Hardware KVM outside QEMU: KVM stops at int3, and debug registers watch memory.
        ("kvm_amd" | "kvm_intel", false) => "breakpoints: int3; watchpoints: debug registers",
        (module, rig) => panic!(
            "a host these tests do not know (KVM module {module}, in the rig: {rig}): \
             say in tests/gdb.rs what its gdb stub must offer"
        ),
    }
}

/// The "gdb attached" line of `guest` in `stderr`, checked to say [`expected_support`].
fn attached_line(stderr: &str, guest: &str) -> String {
    let prefix = format!("mini-kvm: guest '{guest}': gdb attached (");
    let line = stderr
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{stderr}"));
    assert_eq!(line, format!("{prefix}{})", expected_support()), "{stderr}");
    format!("{line}\n")
}

/// The first stderr lines of every session: where the stub listens, and gdb's arrival.
fn session_start(guest: &str, target: &str, stderr: &str) -> String {
    format!(
        "mini-kvm: guest '{guest}' waits for gdb on {target}: gdb -ex 'target remote {target}'\n{}",
        attached_line(stderr, guest)
    )
}

#[test]
fn stepping_through_hello_shows_its_registers_and_what_it_prints() {
    let guest = Guest::start("", &["hello"]);
    let target = guest.target.clone();
    let session = guest.gdb(
        None,
        &[
            // Real mode: the PC gdb sees is linear (CS × 16 + IP), and it disassembles 16-bit.
            "printf \"= start eip=%#x cs=%#x\\n\", $eip, $cs",
            "x/4i $pc",
            "stepi",
            "stepi",
            "stepi",
            // After `lods`: the first byte of the message in AL, SI past it.
            "printf \"= after lods eip=%#x al=%#x si=%#x\\n\", $eip, $eax & 0xff, $esi",
            "x/s 0x10016",
            "continue",
        ],
    );
    assert_eq!(
        printed(&session.stdout),
        [
            "start eip=0x10000 cs=0x1000",
            "after lods eip=0x10007 al=0x48 si=0x17"
        ],
        "{session:?}"
    );
    for line in [
        "=> 0x10000:\tmov    $0x16,%si",
        "   0x10003:\tmov    $0x3f8,%dx",
        "   0x10006:\tlods   %ds:(%si),%al",
        "   0x10007:\ttest   %al,%al",
        "0x10016:\t\"Hello, KVM!\\n\"",
        "[Inferior 1 (process 1) exited normally]",
    ] {
        assert!(session.stdout.contains(line), "no {line:?}: {session:?}");
    }
    let run = guest.finish();
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout, b"Hello, KVM!\n", "{run:?}");
    assert_eq!(
        run.stderr,
        session_start("hello", &target, &run.stderr),
        "{run:?}"
    );
}

#[test]
fn a_breakpoint_in_a_protected_mode_guest_then_detach() {
    let guest = Guest::start("", &["pm_hello"]);
    let target = guest.target.clone();
    let session = guest.gdb(
        None,
        &[
            "break *0x1000a",
            "continue",
            "printf \"= eip=%#x ebx=%#x ecx=%u\\n\", $eip, $ebx, $ecx",
            // EBX points at the message, ECX is its length.
            "x/s $ebx",
            "detach",
        ],
    );
    assert_eq!(
        printed(&session.stdout),
        ["eip=0x1000a ebx=0x1001a ecx=34"],
        "{session:?}"
    );
    for line in [
        "Breakpoint 1 at 0x1000a",
        "Breakpoint 1, 0x0001000a in ?? ()",
        "0x1001a:\t\"Hello from 32-bit protected mode!\\n\"",
        "[Inferior 1 (process 1) detached]",
    ] {
        assert!(session.stdout.contains(line), "no {line:?}: {session:?}");
    }
    // Detached, the guest runs on to its end.
    let run = guest.finish();
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(
        run.stdout, b"Hello from 32-bit protected mode!\n",
        "{run:?}"
    );
    assert_eq!(
        run.stderr,
        format!(
            "{}mini-kvm: guest 'pm_hello': gdb detached: the guest runs on\n",
            session_start("pm_hello", &target, &run.stderr)
        ),
        "{run:?}"
    );
}

#[test]
fn in_long_mode_gdb_changes_registers_and_memory_the_guest_then_uses() {
    let guest = Guest::start("", &["long_hello"]);
    let session = guest.gdb(
        None,
        &[
            // After `mov $0x1d, %ecx`, the length of the first WRITE.
            "break *0x1000c",
            "continue",
            "printf \"= rip=%#lx rbx=%#lx rcx=%lu\\n\", $rip, $rbx, $rcx",
            // Five bytes, and a J for the H.
            "set var $rcx = 5",
            "set var *(char *) 0x10046 = 'J'",
            "delete",
            // Just after the hypercall's `out`: RAX holds what WRITE returned.
            "break *0x10013",
            "continue",
            "printf \"= rip=%#lx rax=%lu\\n\", $rip, $rax",
            "continue",
        ],
    );
    assert_eq!(
        printed(&session.stdout),
        ["rip=0x1000c rbx=0x10046 rcx=29", "rip=0x10013 rax=5"],
        "{session:?}"
    );
    assert!(
        session
            .stdout
            .contains("[Inferior 1 (process 1) exited normally]"),
        "{session:?}"
    );
    let run = guest.finish();
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout, b"Jello2^40 = 1099511627776\n", "{run:?}");
}

#[test]
fn a_breakpoint_on_a_kernel_function_of_the_os_by_name_then_kill() {
    let dir = scratch("gdb-os");
    let elf = dir.join("os.elf");
    let symbols = mini_kvm(&["symbols", "os", "-o", elf.to_str().unwrap()], b"");
    assert_eq!(symbols.status, 0, "{symbols:?}");
    assert_eq!(
        symbols.stdout_text(),
        format!(
            "wrote {} ({} bytes): gdb {} -ex 'target remote SOCKET' with the socket that \
             mini-kvm run --gdb os prints\n",
            elf.display(),
            std::fs::metadata(&elf).unwrap().len(),
            elf.display()
        )
    );
    let guest = Guest::start("", &["os"]);
    let target = guest.target.clone();
    let session = guest.gdb(
        Some(&elf),
        &[
            "break kernel::process::spawn",
            "continue",
            "printf \"= at %#lx\\n\", $pc",
            "info symbol $pc",
            "bt 1",
            "kill",
        ],
    );
    // Stopped where gdb put the breakpoint: in the function, after its prologue.
    let placed = session
        .stdout
        .split("Breakpoint 1 at ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no breakpoint address: {session:?}"));
    assert_eq!(
        printed(&session.stdout),
        [format!("at {placed}")],
        "{session:?}"
    );
    for text in [
        ": file src/kernel/process.rs, line ",
        "Breakpoint 1, kernel::process::spawn () at src/kernel/process.rs:",
        "#0  kernel::process::spawn () at src/kernel/process.rs:",
    ] {
        assert!(session.stdout.contains(text), "no {text:?}: {session:?}");
    }
    // The symbol of the PC is the function (its name carries Rust's hash).
    assert!(
        session
            .stdout
            .lines()
            .any(|line| line.starts_with("kernel::process::spawn::h")
                && line.ends_with(" in section .text")),
        "{session:?}"
    );
    let run = guest.finish();
    assert_eq!(run.status, 137, "{run:?}");
    // The symbols are the OS's: the stub gave gdb 64-bit registers, although multiboot starts
    // the kernel in protected mode.
    assert_eq!(
        run.stderr,
        format!(
            "mini-kvm: guest 'os' waits for gdb on {target}: gdb -ex 'target remote {target}' \
             (its symbols: mini-kvm symbols os -o os.elf, then gdb os.elf -ex 'target remote \
             {target}')\n{}mini-kvm: guest 'os' stopped: gdb killed it\n",
            attached_line(&run.stderr, "os")
        ),
        "{run:?}"
    );
}

#[test]
fn a_breakpoint_in_the_kernel_path_of_a_system_call() {
    let dir = scratch("gdb-os-tty");
    let elf = dir.join("os.elf");
    assert_eq!(
        mini_kvm(&["symbols", "os", "-o", elf.to_str().unwrap()], b"").status,
        0
    );
    // The shell reads its menu choice with the `read` system call, whose kernel side runs in
    // the handler of an exception (`ud2`), with the trap flag cleared: a debug register finds
    // it where single-stepping would not (docs/gdb.md).
    let guest = Guest::start("", &["os"]);
    let session = guest.gdb(
        Some(&elf),
        &[
            "break kernel::tty::read",
            "continue",
            "printf \"= cs=%#x\\n\", $cs",
            "kill",
        ],
    );
    let run = guest.finish();
    if attached_line(&run.stderr, "os").contains("breakpoints: single-stepping;") {
        // A host with neither int3 nor debug registers for breakpoints (QEMU's nested SVM,
        // the rig): single-stepping is blind inside the handler, as docs/gdb.md says, and the
        // shell runs to its end (no input: it exits).
        assert!(!session.stdout.contains("Breakpoint 1, "), "{session:?}");
        assert!(
            session
                .stdout
                .contains("[Inferior 1 (process 1) exited normally]"),
            "{session:?}"
        );
        assert_eq!(run.status, 0, "{run:?}");
        return;
    }
    assert!(
        session
            .stdout
            .contains("Breakpoint 1, kernel::tty::read () at src/kernel/tty.rs:"),
        "{session:?}"
    );
    assert_eq!(printed(&session.stdout), ["cs=0x8"], "{session:?}");
    assert_eq!(run.status, 137, "{run:?}");
    // The menu came out before the shell asked for a choice.
    assert!(run.stdout_text().ends_with("Select: "), "{run:?}");
}

#[test]
fn ctrl_c_in_gdb_stops_a_guest_that_loops_forever() {
    let forever = test_guest("forever");
    let guest = Guest::start("", &[forever.to_str().unwrap()]);
    // Ctrl-C in gdb's terminal, once the guest runs (it has printed): gdb sends the stub a
    // 0x03 byte.
    let running = || guest.printed.load(Ordering::Acquire);
    let session = gdb(
        &guest.target,
        None,
        &["continue", "printf \"= stopped\\n\"", "x/i $pc", "kill"],
        Some(&running),
    );
    assert!(
        session
            .stdout
            .contains("Program received signal SIGINT, Interrupt."),
        "{session:?}"
    );
    assert_eq!(printed(&session.stdout), ["stopped"], "{session:?}");
    // Stopped in `jmp .`, the guest's last instruction.
    assert!(session.stdout.contains(":\tjmp    0x"), "{session:?}");
    let run = guest.finish();
    assert_eq!(run.status, 137, "{run:?}");
    assert_eq!(run.stdout, b"looping\n", "{run:?}");
}

#[test]
fn after_detach_the_guest_ends_with_its_own_status() {
    let exit42 = test_guest("exit42");
    let guest = Guest::start("", &[exit42.to_str().unwrap()]);
    let session = guest.gdb(None, &["stepi", "detach"]);
    assert!(
        session.stdout.contains("[Inferior 1 (process 1) detached]"),
        "{session:?}"
    );
    let run = guest.finish();
    assert_eq!(run.status, 42, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[test]
fn gdb_hears_the_exit_status_of_a_guest_it_runs_to_the_end() {
    let exit42 = test_guest("exit42");
    let guest = Guest::start("", &[exit42.to_str().unwrap()]);
    let session = guest.gdb(None, &["continue"]);
    assert!(
        session
            .stdout
            .contains("[Inferior 1 (process 1) exited with code 052]"),
        "{session:?}"
    );
    assert_eq!(guest.finish().status, 42);
}

#[test]
fn a_unix_socket_and_a_timeout_while_gdb_waits() {
    let dir = scratch("gdb-unix");
    let socket = dir.join("hello.sock");
    // The guest stays stopped at gdb's prompt past its --timeout: it ends, and gdb's
    // connection closes. The timeout runs from mini-kvm's start, gdb's start-up included: 2 s
    // was too short for gdb to connect in the rig (QEMU's emulated CPU), where the guest timed
    // out first and took its socket with it; 10 s is not.
    let guest = Guest::start(socket.to_str().unwrap(), &["--timeout", "10", "hello"]);
    assert_eq!(guest.target, socket.display().to_string());
    let session = guest.gdb(
        None,
        &[
            "printf \"= eip=%#x\\n\", $eip",
            "shell sleep 12",
            "printf \"= still here\\n\"",
            "stepi",
        ],
    );
    assert_eq!(
        printed(&session.stdout),
        ["eip=0x10000", "still here"],
        "{session:?}"
    );
    let run = guest.finish();
    assert_eq!(run.status, 124, "{run:?}");
    assert!(
        run.stderr.contains(
            "mini-kvm: guest 'hello' was still running after 10.0 s (--timeout): stopped"
        ),
        "{run:?}"
    );
    // The socket file is gone with the session.
    assert!(!socket.exists());
}

#[test]
fn two_guests_each_have_a_stub_of_their_own() {
    require_kvm();
    require_gdb();
    let mut child = mini_kvm_command()
        .args(["run", "--gdb", "hello", "pm_hello"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut targets = Vec::new();
    for guest in ["hello", "pm_hello"] {
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        let target = line
            .split(" waits for gdb on ")
            .nth(1)
            .and_then(|rest| rest.split(": gdb").next())
            .unwrap_or_else(|| panic!("{line:?}"))
            .to_string();
        assert!(
            line.starts_with(&format!("mini-kvm: guest '{guest}' waits")),
            "{line}"
        );
        targets.push(target);
    }
    assert_ne!(targets[0], targets[1]);
    // Each gdb sees its own guest's mode and code.
    let first = gdb(
        &targets[0],
        None,
        &["printf \"= %#x\\n\", $cs", "continue"],
        None,
    );
    let second = gdb(
        &targets[1],
        None,
        &["printf \"= %#x\\n\", $cs", "continue"],
        None,
    );
    assert_eq!(printed(&first.stdout), ["0x1000"], "{first:?}");
    assert_eq!(printed(&second.stdout), ["0x8"], "{second:?}");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "[1:hello] Hello, KVM!\n[2:pm_hello] Hello from 32-bit protected mode!\n"
    );
}

#[test]
fn each_vcpu_is_a_thread() {
    let guest = Guest::start("", &["--cpus", "2", "smp"]);
    let session = guest.gdb(
        None,
        &[
            "info threads",
            "thread 2",
            // vCPU 1 waits for its INIT and SIPI at the reset vector, in real mode.
            "printf \"= cpu 1 at %#x, cs %#x\\n\", $eip, $cs",
            "continue",
        ],
    );
    for text in [
        "* 1    Thread 1.1 (vCPU 0, protected mode (32-bit)) 0x00010000 in ?? ()",
        "  2    Thread 1.2 (vCPU 1, real mode (16-bit))      0xfffffff0 in ?? ()",
        "[Inferior 1 (process 1) exited normally]",
    ] {
        assert!(session.stdout.contains(text), "no {text:?}: {session:?}");
    }
    assert_eq!(
        printed(&session.stdout),
        ["cpu 1 at 0xfffffff0, cs 0xf000"],
        "{session:?}"
    );
    let run = guest.finish();
    assert_eq!(run.status, 0, "{run:?}");
    assert!(
        run.stdout_text().ends_with("smp: 550 primes below 4000\n"),
        "{run:?}"
    );
}

#[test]
fn a_second_gdb_is_refused_and_the_first_one_leaving_lets_the_guest_run() {
    use std::net::TcpStream;
    let guest = Guest::start("tcp:0", &["hello"]);
    let mut guest = guest;
    // TCP is taken only when asked for, and with a warning.
    assert_eq!(
        guest.next_stderr_line(),
        format!(
            "mini-kvm: warning: any user of this machine can connect to {} and take over guest \
             'hello' (its memory, its registers, and what its disks and network reach); --gdb \
             alone makes a Unix socket only you can use",
            guest.target
        )
    );
    // The first "gdb": a connection that says nothing, then goes away.
    let first = TcpStream::connect(&guest.target).unwrap();
    let attached = guest.next_stderr_line();
    assert_eq!(format!("{attached}\n"), attached_line(&attached, "hello"));
    let second = guest.gdb(None, &["stepi"]);
    assert!(
        second.stderr.contains(
            "Remote failure reply: E.mini-kvm: guest 'hello' has a gdb attached already, and \
             takes one at a time"
        ),
        "{second:?}"
    );
    drop(first);
    let run = guest.finish();
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout, b"Hello, KVM!\n", "{run:?}");
    assert!(
        run.stderr.ends_with(
            "mini-kvm: guest 'hello': gdb left without detaching (Connection Error while \
             reading request: gdb closed the connection): the guest runs on\n"
        ),
        "{run:?}"
    );
}

#[test]
fn bad_gdb_addresses_are_clear_errors() {
    require_kvm();
    let run = mini_kvm(&["run", "--gdb=tcp:99999", "hello"], b"");
    assert_eq!(run.status, 2, "{run:?}");
    assert!(
        run.stderr.contains(
            "'tcp:99999' is not a place for gdb to connect to: give --gdb alone (a private Unix \
             socket), --gdb=PATH (a Unix socket there) or --gdb=tcp:PORT (e.g. tcp:1234; tcp:0 \
             picks a free port)"
        ),
        "{run:?}"
    );
    // A bare port was TCP once: it is refused, with the way to ask for TCP.
    let run = mini_kvm(&["run", "--gdb=1234", "hello"], b"");
    assert_eq!(run.status, 2, "{run:?}");
    assert!(
        run.stderr.contains(
            "--gdb=1234: a bare port is not taken, because any user of this machine can connect \
             to a TCP port and take over the guest; write --gdb=tcp:1234 if that is what you \
             want, or --gdb alone for a Unix socket only you can use"
        ),
        "{run:?}"
    );
    // `--gdb VALUE` with a space: --gdb is bare (its value needs '='), and VALUE was read as
    // the first guest. Once this said "unknown guest '1234'" or "cannot read guest image".
    for (value, meant) in [
        ("1234", "--gdb=tcp:1234 for that TCP port"),
        (
            "/tmp/no-such-dir/gdb.sock",
            "--gdb=/tmp/no-such-dir/gdb.sock for a socket at that path",
        ),
    ] {
        let run = mini_kvm(&["run", "--gdb", value, "hello"], b"");
        common::assert_error(
            &run,
            1,
            &format!(
                "mini-kvm: error: '{value}' came after --gdb with a space, so it was read as a \
                 guest, and there is no guest or file of that name: --gdb takes its value after \
                 '=' ({meant}; --gdb alone makes a private socket)"
            ),
        );
    }
    // A port another program has.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let run = mini_kvm(&["run", &format!("--gdb=tcp:{port}"), "hello"], b"");
    common::assert_error(
        &run,
        1,
        &format!(
            "mini-kvm: error: --gdb: cannot listen on 127.0.0.1:{port}: Address already in use \
             (os error 98) (another program, or another mini-kvm, has it: choose another port, \
             or tcp:0 for a free one)"
        ),
    );
    // A socket in a directory that does not exist.
    let run = mini_kvm(&["run", "--gdb=/nonexistent/dir/x.sock", "hello"], b"");
    common::assert_error(
        &run,
        1,
        "mini-kvm: error: --gdb: cannot make the socket /nonexistent/dir/x.sock: No such file or \
         directory (os error 2) (the directory must exist and be writable, and no file may have \
         that name)",
    );
    // --gdb with --tui: the view owns the terminal.
    let run = mini_kvm(&["run", "--gdb", "--tui", "hello"], b"");
    assert_eq!(run.status, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("the argument '--gdb[=<PATH|tcp:PORT>]' cannot be used with '--tui'"),
        "{run:?}"
    );
    // A guest without symbols.
    let run = mini_kvm(&["symbols", "hello", "-o", "/dev/null"], b"");
    common::assert_error(
        &run,
        1,
        "mini-kvm: error: 'hello' is not a built-in guest with symbols (those are: os)",
    );
}

#[test]
fn a_watchpoint_in_the_os_kernel() {
    let dir = scratch("gdb-watch");
    let elf = dir.join("os.elf");
    assert_eq!(
        mini_kvm(&["symbols", "os", "-o", elf.to_str().unwrap()], b"").status,
        0
    );
    // The frame allocator's address, from its (non-debugging) symbol.
    let symbols = gdb(
        "",
        Some(&elf),
        &["info variables ^kernel::frames::FRAMES"],
        None,
    );
    let address = symbols
        .stdout
        .lines()
        .find(|line| line.starts_with("0x") && line.contains("kernel::frames::FRAMES"))
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("no kernel::frames::FRAMES: {symbols:?}"))
        .to_string();
    // Its first word: the start of the first free memory region, which frames::init writes at
    // boot.
    let watch = format!("watch *(long *) {address}");
    let fired = |session: &GdbRun, kind: &str| {
        for text in [
            format!("{kind} 1: *(long *) {address}"),
            "Old value = 0".to_string(),
            "New value = ".to_string(),
            "in kernel::frames::init () at src/kernel/frames.rs:".to_string(),
        ] {
            assert!(session.stdout.contains(&text), "no {text:?}: {session:?}");
        }
    };
    let guest = Guest::start("", &["os"]);
    let session = guest.gdb(Some(&elf), &[&watch, "continue", "bt 1", "kill"]);
    let run = guest.finish();
    assert_eq!(run.status, 137, "{run:?}");
    if attached_line(&run.stderr, "os").contains("watchpoints: debug registers") {
        fired(&session, "Hardware watchpoint");
        return;
    }
    // No debug register watches memory here (kvm_pvm; QEMU's nested SVM in the rig): the stub
    // does not offer it, gdb says so when the guest resumes, ...
    assert!(
        session
            .stderr
            .contains("Could not insert hardware watchpoint 1."),
        "{session:?}"
    );
    // ... and gdb's own watchpoint, which single-steps the guest, does the job.
    let guest = Guest::start("", &["os"]);
    let session = guest.gdb(
        Some(&elf),
        &[
            "set can-use-hw-watchpoints 0",
            &watch,
            "continue",
            "bt 1",
            "kill",
        ],
    );
    fired(&session, "Watchpoint");
    assert_eq!(guest.finish().status, 137);
}

/// The other local user of the security tests: `nobody`, when the tests run as root (who could
/// connect to anything). Returns `None` for a test run as another user, who cannot switch.
fn as_another_user(command: &mut Command) -> Option<&mut Command> {
    use std::os::unix::process::CommandExt;
    common::is_root().then(|| command.uid(65534).gid(65534).env("HOME", "/"))
}

/// What another user's gdb gets at `target`: `None` when the tests cannot act as another user.
fn gdb_as_another_user(target: &str) -> Option<GdbRun> {
    let mut command = Command::new("gdb");
    command.args(["-batch", "-nx", "-ex", &format!("target remote {target}")]);
    let command = as_another_user(&mut command)?;
    let run = run_watched(command, b"", &mut |_, _| {});
    Some(GdbRun {
        status: run.status,
        stdout: run.stdout_text(),
        stderr: run.stderr,
    })
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// `--gdb` alone: a socket in a new directory only its user can enter. Another user's gdb is
/// refused by the kernel; the user's own gdb then debugs the guest as usual.
#[test]
fn only_its_user_can_connect_to_the_default_socket() {
    let guest = Guest::start("", &["hello"]);
    let socket = Path::new(&guest.target).to_path_buf();
    let dir = socket.parent().unwrap().to_path_buf();
    assert!(
        dir.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("mini-kvm-gdb-"),
        "{}",
        dir.display()
    );
    assert_eq!(socket.file_name().unwrap(), "hello.sock");
    assert_eq!(mode_of(&dir), 0o700);
    assert_eq!(mode_of(&socket) & 0o777, 0o600);
    if let Some(intruder) = gdb_as_another_user(&guest.target) {
        assert_eq!(intruder.status, 1, "{intruder:?}");
        assert_eq!(
            intruder.stderr,
            format!("{}: Permission denied.\n", guest.target),
            "{intruder:?}"
        );
    }
    let session = guest.gdb(None, &["printf \"= %#x\\n\", $eip", "continue"]);
    assert_eq!(printed(&session.stdout), ["0x10000"], "{session:?}");
    let run = guest.finish();
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout, b"Hello, KVM!\n");
    // Socket and directory are gone once gdb is in.
    assert!(!socket.exists() && !dir.exists());
}

/// `--gdb=PATH`: the socket is 0600 whatever the umask (0 here: it would have been 0777), and a
/// name somebody else put there first (a symlink to a file of ours) is refused, not followed.
#[test]
fn a_socket_path_is_its_users_alone_whatever_the_umask() {
    use std::os::unix::process::CommandExt;
    let dir = scratch("gdb-umask");
    // A directory everyone may write, as /tmp.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let socket = dir.join("guest.sock");
    let mut command = mini_kvm_command();
    // SAFETY: umask is async-signal-safe and touches nothing else.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let guest = Guest::start_with(&mut command, socket.to_str().unwrap(), &["hello"]);
    assert_eq!(guest.target, socket.display().to_string());
    assert_eq!(mode_of(&socket) & 0o777, 0o600);
    // Nothing else was left in the directory (the socket was made in a private one beside).
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, ["guest.sock"]);
    if let Some(intruder) = gdb_as_another_user(&guest.target) {
        assert_eq!(
            intruder.stderr,
            format!("{}: Permission denied.\n", guest.target),
            "{intruder:?}"
        );
    }
    let session = guest.gdb(None, &["continue"]);
    assert!(
        session
            .stdout
            .contains("[Inferior 1 (process 1) exited normally]"),
        "{session:?}"
    );
    assert_eq!(guest.finish().status, 0);

    // A symlink planted where the socket should be.
    let precious = dir.join("precious");
    std::fs::write(&precious, b"keep me").unwrap();
    std::os::unix::fs::symlink(&precious, &socket).unwrap();
    let run = mini_kvm(
        &["run", &format!("--gdb={}", socket.display()), "hello"],
        b"",
    );
    common::assert_error(
        &run,
        1,
        &format!(
            "mini-kvm: error: --gdb: cannot make the socket {}: File exists (os error 17) (the \
             directory must exist and be writable, and no file may have that name)\n",
            socket.display()
        ),
    );
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep me");
    assert!(std::fs::symlink_metadata(&socket).unwrap().is_symlink());
}

/// Starts a thread that writes `bytes` to `stream` again and again until a write fails (the
/// stub closed the connection); returns how many bytes went out.
fn flood<S: std::io::Write + Send + 'static>(
    mut stream: S,
    bytes: &'static [u8],
) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut sent = 0u64;
        while stream.write_all(bytes).is_ok() {
            sent += bytes.len() as u64;
        }
        sent
    })
}

/// A packet that never ends: the stub's packet buffer does not grow with it (gdbstub's own did,
/// to hundreds of megabytes); the session ends when the buffer is full, and the guest runs on.
#[test]
fn a_packet_that_never_ends_ends_the_session() {
    use std::os::unix::net::UnixStream;
    let mut guest = Guest::start("", &["hello"]);
    let mut stream = UnixStream::connect(&guest.target).unwrap();
    std::io::Write::write_all(&mut stream, b"$").unwrap();
    let flooder = flood(stream, &[b'a'; 1024]);
    let attached = guest.next_stderr_line();
    assert_eq!(format!("{attached}\n"), attached_line(&attached, "hello"));
    let run = guest.finish();
    // The stub closed the connection, and the flood stopped with it.
    let sent = flooder.join().unwrap();
    assert!(sent < 1 << 20, "the stub read {sent} bytes of one packet");
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout, b"Hello, KVM!\n", "{run:?}");
    assert!(
        run.stderr.ends_with(
            "mini-kvm: guest 'hello': gdb left without detaching (Received an oversized packet \
             (did not fit in provided packet buffer)): the guest runs on\n"
        ),
        "{run:?}"
    );
}

/// A client that keeps sending requests: the stub's reads always find bytes, and when the
/// client does not read the answers, its writes fill the socket. Neither may keep the run past
/// its --timeout.
fn a_client_that_never_stops_sending(reads_answers: bool) {
    use std::os::unix::net::UnixStream;
    let mut guest = Guest::start("", &["--timeout", "2", "hello"]);
    let stream = UnixStream::connect(&guest.target).unwrap();
    let reader = reads_answers.then(|| {
        let mut answers = stream.try_clone().unwrap();
        thread::spawn(move || std::io::copy(&mut answers, &mut std::io::sink()))
    });
    // "?": why did the target stop (a reply for each).
    let flooder = flood(stream, b"$?#3f");
    let attached = guest.next_stderr_line();
    assert_eq!(format!("{attached}\n"), attached_line(&attached, "hello"));
    let run = guest.finish();
    flooder.join().unwrap();
    if let Some(reader) = reader {
        let _ = reader.join().unwrap();
    }
    assert_eq!(run.status, 124, "{run:?}");
    assert!(
        run.stderr
            .contains("mini-kvm: guest 'hello' was still running after 2.0 s (--timeout): stopped"),
        "{run:?}"
    );
    assert_eq!(run.stdout, b"", "{run:?}");
}

#[test]
fn a_client_that_never_stops_asking_cannot_outlive_the_timeout() {
    a_client_that_never_stops_sending(true);
}

#[test]
fn a_client_that_never_reads_cannot_outlive_the_timeout() {
    a_client_that_never_stops_sending(false);
}

/// A second client, refused, that trickles a byte now and then: it is closed after a moment,
/// and the run still ends at its --timeout.
#[test]
fn a_refused_client_that_trickles_cannot_outlive_the_timeout() {
    use std::net::TcpStream;
    let mut guest = Guest::start("tcp:0", &["--timeout", "2", "hello"]);
    let _warning = guest.next_stderr_line();
    // The first client: attached, silent (the guest stays stopped).
    let _first = TcpStream::connect(&guest.target).unwrap();
    let attached = guest.next_stderr_line();
    assert_eq!(format!("{attached}\n"), attached_line(&attached, "hello"));
    let mut second = TcpStream::connect(&guest.target).unwrap();
    let trickler = thread::spawn(move || {
        let started = Instant::now();
        // A byte every 100 ms, for a minute at most, until the stub closes the connection.
        while started.elapsed() < Duration::from_secs(60) {
            if std::io::Write::write_all(&mut second, b"+").is_err() {
                return true;
            }
            thread::sleep(Duration::from_millis(100));
        }
        false
    });
    let run = guest.finish();
    assert_eq!(run.status, 124, "{run:?}");
    assert!(
        trickler.join().unwrap(),
        "the refused client was never closed"
    );
}
