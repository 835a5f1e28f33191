//! Booting Linux: a distribution's bzImage (Debian's cloud kernel) with an initramfs of our own
//! (`mini-kvm initramfs`, a static busybox). Linux needs hardware KVM, so the boot runs in the
//! rig (tests/hw-kvm/run carries the kernel in and names it in MINI_KVM_LINUX_KERNEL); the
//! host checks the initramfs and the loader's errors.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_error, host_kvm_module, mini_kvm, mini_kvm_command, require_kvm, scratch};
use mini_kvm::loader::initramfs::INIT_MARKER;

/// The bzImage to boot: MINI_KVM_LINUX_KERNEL, or this machine's newest /boot/vmlinuz-*.
fn linux_kernel() -> PathBuf {
    if let Some(path) = std::env::var_os("MINI_KVM_LINUX_KERNEL") {
        return PathBuf::from(path);
    }
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| {
                    path.file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz-"))
                })
                .collect()
        })
        .unwrap_or_default();
    kernels.sort();
    kernels.pop().expect(
        "these tests boot a distribution kernel: install one (Debian: apt install \
         linux-image-cloud-amd64) or name a bzImage in MINI_KVM_LINUX_KERNEL",
    )
}

/// The static busybox the initramfs is made of (Debian: busybox-static).
const BUSYBOX: &str = "/bin/busybox";

/// Makes the initramfs with `mini-kvm initramfs` in `dir`; returns its path.
fn make_initramfs(dir: &std::path::Path) -> String {
    make_initramfs_with(dir, &[])
}

/// The same, with more arguments for `mini-kvm initramfs` (`--modules DIR`).
fn make_initramfs_with(dir: &std::path::Path, extra: &[&str]) -> String {
    let initrd = dir.join("initrd.cpio");
    let path = initrd.to_str().unwrap();
    let mut args = vec!["initramfs", "--busybox", BUSYBOX, "-o", path];
    args.extend_from_slice(extra);
    let run = mini_kvm(&args, b"");
    assert_eq!(run.status, 0, "{run:?}");
    assert!(
        run.stdout_text().starts_with(&format!("wrote {path} (")),
        "{run:?}"
    );
    path.to_string()
}

#[test]
fn the_initramfs_holds_busybox_and_init() {
    let dir = scratch("initramfs");
    let initrd = make_initramfs(&dir);
    let archive = std::fs::read(&initrd).unwrap();
    let busybox = std::fs::read(BUSYBOX).unwrap();
    // busybox whole, after its newc header and name.
    assert!(
        archive
            .windows(busybox.len())
            .any(|window| window == busybox.as_slice()),
        "busybox is not in the archive"
    );
    let text = String::from_utf8_lossy(&archive);
    assert!(text.contains("070701"), "not a newc archive");
    assert!(text.contains(INIT_MARKER));
    assert!(text.ends_with("TRAILER!!!\0\0\0\0"));
}

#[test]
fn a_dynamic_busybox_is_refused() {
    let dir = scratch("initramfs-dynamic");
    let output = dir.join("x.cpio");
    // tmux is dynamically linked, here and in the rig (which carries it with its libraries).
    let run = mini_kvm(
        &[
            "initramfs",
            "--busybox",
            "/usr/bin/tmux",
            "-o",
            output.to_str().unwrap(),
        ],
        b"",
    );
    assert_error(
        &run,
        1,
        "mini-kvm: error: /usr/bin/tmux is not a statically linked x86-64 program: the initramfs has \
         no libraries for it (on Debian and Ubuntu: apt install busybox-static, then use \
         /bin/busybox)",
    );
    assert!(!output.exists());
}

#[test]
fn a_kernel_needs_room_to_decompress() {
    require_kvm();
    let kernel = linux_kernel();
    // 24 MiB holds the file (14 MiB for Debian's 6.1 cloud kernel) but not the room the kernel
    // decompresses into: its init_size (51 MiB) from its pref_address (16 MiB).
    let run = mini_kvm(&["run", "--mem", "24M", kernel.to_str().unwrap()], b"");
    assert_error(
        &run,
        1,
        "does not fit in guest memory: it loads 0x100000-0x",
    );
    assert!(
        run.stderr
            .contains("give the guest more memory with --mem (e.g. --mem "),
        "{run:?}"
    );
}

#[test]
fn busybox_must_be_a_regular_file() {
    // /dev/zero would never end, and a FIFO would block the open.
    let dir = scratch("initramfs-device");
    let output = dir.join("x.cpio");
    let run = mini_kvm(
        &[
            "initramfs",
            "--busybox",
            "/dev/zero",
            "-o",
            output.to_str().unwrap(),
        ],
        b"",
    );
    assert_error(
        &run,
        1,
        "mini-kvm: error: /dev/zero is not a regular file: give the busybox program's file\n",
    );
    assert!(!output.exists());
}

#[test]
fn an_empty_initramfs_is_refused() {
    require_kvm();
    let dir = scratch("initrd-empty");
    let initrd = dir.join("empty.cpio");
    std::fs::write(&initrd, b"").unwrap();
    let kernel = linux_kernel();
    let run = mini_kvm(
        &[
            "run",
            "--mem",
            "256M",
            "--initrd",
            initrd.to_str().unwrap(),
            kernel.to_str().unwrap(),
        ],
        b"",
    );
    let name = kernel.file_name().unwrap().to_string_lossy();
    assert_error(
        &run,
        1,
        &format!(
            "mini-kvm: error: the initramfs for {name} is empty: leave out --initrd, or give it \
             an archive\n"
        ),
    );
}

/// `--initrd` files are read with the same bounds as images, and their errors name them.
#[test]
fn an_unreadable_initramfs_is_named() {
    let kernel = linux_kernel();
    let kernel = kernel.to_str().unwrap();
    let run = mini_kvm(
        &[
            "run",
            "--mem",
            "256M",
            "--initrd",
            "/no/such/initrd",
            kernel,
        ],
        b"",
    );
    assert_error(
        &run,
        1,
        "mini-kvm: error: cannot read initramfs /no/such/initrd: No such file or directory \
         (os error 2)",
    );
    let run = mini_kvm(
        &["run", "--mem", "256M", "--initrd", "/dev/zero", kernel],
        b"",
    );
    assert_error(
        &run,
        1,
        "mini-kvm: error: initramfs /dev/zero is a character device, not a regular file: \
         mini-kvm reads only regular files",
    );
}

#[test]
fn initrd_is_for_linux_only() {
    require_kvm();
    let dir = scratch("initrd-flat");
    let initrd = make_initramfs(&dir);
    let run = mini_kvm(&["run", "--mem", "8M", "--initrd", &initrd, "hello"], b"");
    assert_error(
        &run,
        1,
        "mini-kvm: error: hello is a flat binary: --initrd applies only to Linux kernels (a \
         bzImage, or a vmlinux with a PVH entry)",
    );
    // A PVH kernel that is not Linux (it has no Linux banner).
    let pvh = common::test_kernel("pvh");
    let run = mini_kvm(
        &[
            "run",
            "--mem",
            "8M",
            "--initrd",
            &initrd,
            pvh.to_str().unwrap(),
        ],
        b"",
    );
    assert_error(
        &run,
        1,
        "mini-kvm: error: pvh.elf is an ELF64 file: --initrd applies only to Linux kernels (a \
         bzImage, or a vmlinux with a PVH entry)",
    );
}

/// Boots the bzImage with the initramfs; see `boot_kernel`.
fn boot(extra: &[&str], commands: &[u8]) -> common::Run {
    let dir = scratch("linux-boot");
    let initrd = make_initramfs(&dir);
    boot_kernel(&linux_kernel(), &initrd, extra, commands)
}

/// Boots `kernel` with the initramfs, with `commands` as its input (then end of input), and
/// returns the run. The input waits in mini-kvm's buffer and the UART until the shell reads
/// it; the first bytes can be lost when the kernel's 8250 driver starts the port and clears its
/// FIFO, so the commands come after a run of empty lines. A watchdog kills a run that goes on
/// past its --timeout.
fn boot_kernel(kernel: &Path, initrd: &str, extra: &[&str], commands: &[u8]) -> common::Run {
    boot_kernel_with(kernel, initrd, extra, commands, |_| {}, |_, _| {})
}

/// `boot_kernel`, with `prepare` run on the command before it starts and `during` run, with
/// mini-kvm's process ID and what it has printed on stdout so far, while the guest runs.
fn boot_kernel_with(
    kernel: &Path,
    initrd: &str,
    extra: &[&str],
    commands: &[u8],
    prepare: impl FnOnce(&mut Command),
    during: impl FnOnce(u32, &Mutex<Vec<u8>>),
) -> common::Run {
    let mut command = mini_kvm_command();
    prepare(&mut command);
    let mut child = command
        .args([
            "run",
            "--mem",
            "256M",
            "--timeout",
            "280",
            "--initrd",
            initrd,
        ])
        .args(extra)
        .arg(kernel)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mini-kvm");
    let mut stdin = child.stdin.take().unwrap();
    let (stdout_pipe, stderr_pipe) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let stdout = Arc::clone(&stdout);
        thread::spawn(move || {
            let mut pipe = stdout_pipe;
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                stdout.lock().unwrap().extend_from_slice(&chunk[..n]);
                // As it comes, for `--nocapture` (RIG_TEST_ARGS=--nocapture in the rig). The
                // macro, not a write to stderr: libtest captures it otherwise, also from this
                // thread.
                eprint!("{}", String::from_utf8_lossy(&chunk[..n]));
            }
        })
    };
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let mut pipe = stderr_pipe;
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let mut input = vec![b'\n'; 32];
    input.extend_from_slice(commands);
    let _ = stdin.write_all(&input);
    drop(stdin);
    // A watchdog, not a timing check: on kvm_pvm the kernel takes about three minutes to reach
    // the instruction KVM cannot emulate when the machine is busy (184 s beside other builds).
    let deadline = Instant::now() + Duration::from_secs(900);
    during(child.id(), &stdout);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap().code().unwrap_or(-1);
        }
        thread::sleep(Duration::from_millis(50));
    };
    reader.join().unwrap();
    let stdout = stdout.lock().unwrap().clone();
    common::Run {
        status,
        stdout,
        stderr: errors.join().unwrap(),
    }
}

/// On kvm_pvm: the kernel got as far as `lock cmpxchg16b`, which KVM's emulator cannot run, and
/// mini-kvm named it, decoded, with its bytes, and said to use hardware KVM (status 126). With
/// several CPUs, the report names the one that faulted (CPU 0: the other never started).
fn assert_stopped_at_cmpxchg16b(run: &common::Run, cpus: usize) {
    assert_eq!(run.status, 126, "{run:?}");
    let on_cpu = if cpus > 1 { " on CPU 0" } else { "" };
    let fault = format!(
        "faulted{on_cpu}: emulation failure (KVM_EXIT_INTERNAL_ERROR, \
         KVM_INTERNAL_ERROR_EMULATION): the host KVM could not emulate this instruction\n"
    );
    for line in [
        fault.as_str(),
        "  mode: long mode (64-bit)",
        ": lock cmpxchg16b 0x20(%rbp)  [f0 48 0f c7 4d 20]\n",
        mini_kvm::vmm::outcome::KVM_PVM_HINT,
    ] {
        assert!(run.stderr.contains(line), "no {line:?}: {run:?}");
    }
}

/// On hardware KVM: the kernel reached `/init`, whose shell printed the kernel's release (as the
/// bzImage's own version string says), and `poweroff -f` ended the run through ACPI soft-off:
/// status 0, nothing on stderr, and the kernel's "reboot: Power down" (without ACPI it would
/// only halt: "reboot: System halted").
fn assert_powered_off_from_the_shell(run: &common::Run) {
    let stdout = run.stdout_text();
    assert_eq!(run.status, 0, "{run:?}");
    assert!(stdout.contains(INIT_MARKER), "{run:?}");
    let release = common::kernel_release(&std::fs::read(linux_kernel()).unwrap());
    assert!(
        stdout.contains(&format!("\n{release}")),
        "no {release}: {run:?}"
    );
    assert!(stdout.contains("reboot: Power down"), "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
}

/// On hardware KVM, three boots. One of two CPUs to the initramfs's shell, which runs what we
/// type (the kernel's release, the CPUs it found through the ACPI tables, their TSC-deadline
/// timers, its command line) and powers off through ACPI (status 0). One that reboots (ACPI's
/// reset register: status 0 and a message). One whose kernel panics (status 123, the panic on
/// the console).
/// On kvm_pvm, which cannot run Linux: the kernel gets as far as the first instruction KVM's
/// emulator cannot emulate (`lock cmpxchg16b`, about a minute in), and mini-kvm names it, says
/// to use hardware KVM and exits 126, without hanging.
#[test]
fn a_distribution_kernel_on_this_hosts_kvm() {
    require_kvm();
    let two_cpus: &[&str] = &["--cpus", "2"];
    let run = boot(
        two_cpus,
        b"uname -r\necho cpus=$(grep -c ^processor /proc/cpuinfo)\ncat /proc/cmdline\n\
          echo deadline=$(grep -c tsc_deadline_timer /proc/cpuinfo)\npoweroff -f\n",
    );
    match host_kvm_module() {
        "kvm_pvm" => assert_stopped_at_cmpxchg16b(&run, 2),
        "kvm_amd" | "kvm_intel" => {
            assert_powered_off_from_the_shell(&run);
            let stdout = run.stdout_text();
            // Both CPUs, from the MADT (Debian's kernel ignores the MP table).
            assert!(stdout.contains("\ncpus=2"), "{run:?}");
            // Both with the TSC-deadline timer mini-kvm adds to CPUID.
            assert!(stdout.contains("\ndeadline=2"), "{run:?}");
            // The default command line, read back from /proc/cmdline.
            assert!(
                stdout.contains("\nconsole=ttyS0 panic=-1 reboot=panic_warm"),
                "{run:?}"
            );

            // One CPU from here on: in the rig, two vCPUs on its one CPU spin-wait for each
            // other at times (the TSC check, cross-CPU calls), which is where QEMU's TCG has
            // been seen to hang the rig (docs/testing.md, "When the rig hangs").
            let run = boot(&[], b"reboot -f\n");
            assert_eq!(run.status, 0, "{run:?}");
            assert!(
                run.stdout_text().contains("reboot: Restarting system"),
                "{run:?}"
            );
            // The guest is named after the kernel's file.
            let name = linux_kernel();
            let name = name.file_name().unwrap().to_string_lossy();
            assert_eq!(
                run.stderr,
                format!(
                    "mini-kvm: guest '{name}' asked for a reboot (the i8042's reset line or the \
                     ACPI reset register): stopped\n"
                ),
                "{run:?}"
            );

            // sysrq c: "trigger a crash", a panic. After a second, so that the shell's echo of
            // the line, which the UART sends at its pace, is out before the panic's message.
            let run = boot(&[], b"sleep 1; echo c > /proc/sysrq-trigger\n");
            assert_eq!(run.status, 123, "{run:?}");
            assert!(
                run.stdout_text()
                    .contains("Kernel panic - not syncing: sysrq triggered crash"),
                "{run:?}"
            );
            assert_eq!(
                run.stderr,
                format!(
                    "mini-kvm: guest '{name}': the kernel panicked (see its message above) and \
                     reset the machine: stopped\n"
                ),
                "{run:?}"
            );
        }
        other => panic!("unknown host KVM module {other}: cannot say what Linux should do"),
    }
}

/// Linux's uncompressed kernel, extracted from the bzImage as the kernel's own
/// scripts/extract-vmlinux does it: the setup header says where the compressed payload is
/// (`payload_offset` at 0x248, from the start of the protected-mode code, and `payload_length`
/// at 0x24c), and its magic which decompressor it needs. Debian's kernels are LZ4-compressed
/// (Debian: apt install lz4; the rig carries the host's `lz4`).
fn extract_vmlinux(bzimage: &Path, into: &Path) -> PathBuf {
    let image = std::fs::read(bzimage).unwrap();
    let u32_at = |at: usize| u32::from_le_bytes(image[at..at + 4].try_into().unwrap()) as usize;
    let setup_sectors = match image[0x1f1] {
        0 => 4,
        sectors => sectors as usize,
    };
    let start = (setup_sectors + 1) * 512 + u32_at(0x248);
    let payload = &image[start..start + u32_at(0x24c)];
    let tool = match payload {
        [0x02, 0x21, 0x4c, 0x18, ..] => "lz4",
        [0x1f, 0x8b, ..] => "gzip",
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => "xz",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "zstd",
        other => panic!(
            "{bzimage:?}: a payload compressed in an unknown way: {:02x?}",
            &other[..8]
        ),
    };
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {tool} (Debian: apt install {tool}): {error}"));
    let mut stdin = child.stdin.take().unwrap();
    let payload = payload.to_vec();
    // Written from a thread: the decompressed kernel (50 MiB) fills the pipe long before the
    // payload is all in.
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&payload);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    // The payload ends with the decompressed size (4 bytes), which some decompressors take for
    // more input and complain about: the ELF header says whether the kernel came out whole.
    let vmlinux = output.stdout;
    assert!(
        vmlinux.starts_with(b"\x7fELF\x02"),
        "{tool} -dc did not give a 64-bit ELF ({} bytes)",
        vmlinux.len()
    );
    let path = into.join("vmlinux");
    std::fs::write(&path, vmlinux).unwrap();
    path
}

/// The same kernel, uncompressed, through its PVH entry (as Firecracker and cloud-hypervisor
/// boot it), with the same initramfs: on hardware KVM it boots, runs what we type and powers
/// off; on kvm_pvm it ends as the bzImage does, at `lock cmpxchg16b` (about 40 s in),
/// with status 126.
#[test]
fn the_uncompressed_kernel_through_its_pvh_entry() {
    require_kvm();
    let dir = scratch("vmlinux");
    let vmlinux = extract_vmlinux(&linux_kernel(), &dir);
    let initrd = make_initramfs(&dir);
    let run = boot_kernel(
        &vmlinux,
        &initrd,
        &[],
        b"uname -r\necho cpus=$(grep -c ^processor /proc/cpuinfo)\npoweroff -f\n",
    );
    match host_kvm_module() {
        "kvm_pvm" => assert_stopped_at_cmpxchg16b(&run, 1),
        "kvm_amd" | "kvm_intel" => {
            assert_powered_off_from_the_shell(&run);
            assert!(run.stdout_text().contains("\ncpus=1"), "{run:?}");
        }
        other => panic!("unknown host KVM module {other}: cannot say what Linux should do"),
    }
}

/// The kernel's module directory, for `mini-kvm initramfs --modules`: MINI_KVM_LINUX_MODULES
/// (the rig carries the virtio drivers there), or /lib/modules/RELEASE of the kernel booted.
fn linux_modules() -> String {
    if let Ok(dir) = std::env::var("MINI_KVM_LINUX_MODULES") {
        return dir;
    }
    let release = common::kernel_release(&std::fs::read(linux_kernel()).unwrap());
    format!("/lib/modules/{release}")
}

/// Runs a host program, which must succeed.
fn host(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (Debian: apt install e2fsprogs)"));
    assert!(output.status.success(), "{program} {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Linux on mini-kvm's virtio devices, found through the DSDT once /init has loaded the drivers
/// (`mini-kvm initramfs --modules`). An ext4 image made on the host (vda) is mounted, written
/// and unmounted, and after power-off the host reads the file back from the image with debugfs.
/// A second image, read-only (vdb), holds a file made on the host: Linux reads it and cannot
/// write. The entropy device is the kernel's hardware RNG.
#[test]
#[ignore = "needs hardware KVM: run in the rig (tests/hw-kvm/run)"]
fn linux_uses_virtio_disks_and_the_entropy_device() {
    require_kvm();
    let dir = scratch("linux-virtio");
    let disk = dir.join("disk.img");
    let disk = disk.to_str().unwrap();
    host("truncate", &["-s", "32M", disk]);
    host("mke2fs", &["-q", "-F", "-t", "ext4", disk]);
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("motd"), "made on the host\n").unwrap();
    let shared = dir.join("shared.img");
    let shared = shared.to_str().unwrap();
    host("truncate", &["-s", "8M", shared]);
    host(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-d",
            files.to_str().unwrap(),
            shared,
        ],
    );
    let before = std::fs::read(shared).unwrap();

    let initrd = make_initramfs_with(&dir, &["--modules", &linux_modules()]);
    let read_only = format!("{shared},ro");
    let run = boot_kernel(
        &linux_kernel(),
        &initrd,
        &["--disk", disk, "--disk", &read_only, "--rng"],
        b"uname -r\n\
          mount /dev/vda /mnt && echo 'written by Linux' > /mnt/hello.txt && umount /mnt && \
          echo vda=done\n\
          mkdir /ro && mount -o ro /dev/vdb /ro && cat /ro/motd\n\
          echo x > /ro/new || echo vdb=read-only\n\
          echo rng=$(cat /sys/class/misc/hw_random/rng_current)\n\
          echo random=$(head -c 16 /dev/hwrng | od -An -tx1 | tr -d ' \\n')\n\
          poweroff -f\n",
    );
    assert_powered_off_from_the_shell(&run);
    let stdout = run.stdout_text();
    common::assert_contains_all(
        &stdout,
        &[
            // The kernel's own lines about the disks: 65536 and 16384 sectors, one read-only.
            "[vda] 65536 512-byte logical blocks",
            "[vdb] 16384 512-byte logical blocks",
            "\nvda=done",
            "\nmade on the host",
            "Read-only file system",
            "\nvdb=read-only",
            "\nrng=virtio_rng.0",
        ],
    );
    let random = stdout
        .lines()
        .find_map(|line| line.trim_end_matches('\r').strip_prefix("random="))
        .expect("the random line");
    assert_eq!(random.len(), 32, "16 bytes in hex: {random:?}");
    assert!(random.bytes().all(|b| b.is_ascii_hexdigit()), "{random:?}");
    // What Linux wrote is in the image, read by the host's own ext4 reader.
    assert_eq!(
        host("debugfs", &["-R", "cat /hello.txt", disk]),
        "written by Linux\n"
    );
    assert_eq!(
        std::fs::read(shared).unwrap(),
        before,
        "the read-only image is unchanged"
    );
}

/// No data lost (docs/virtio.md, "Durability"): Linux writes a file on an ext4 disk and runs
/// `sync`, and as soon as the shell has said that `sync` returned, mini-kvm is killed with
/// SIGKILL: no unmount, no power-off. What `sync` flushed is in the image: the host's debugfs
/// reads the file. (The file system has no journal: with one, what `sync` wrote could sit in
/// the journal, which debugfs does not replay, and the test would depend on when ext4
/// checkpoints.)
#[test]
#[ignore = "needs hardware KVM: run in the rig (tests/hw-kvm/run)"]
fn after_linux_syncs_a_sigkill_loses_nothing() {
    require_kvm();
    let dir = scratch("linux-sync");
    let disk = dir.join("disk.img");
    let disk = disk.to_str().unwrap();
    host("truncate", &["-s", "32M", disk]);
    host(
        "mke2fs",
        &["-q", "-F", "-t", "ext4", "-O", "^has_journal", disk],
    );
    let initrd = make_initramfs_with(&dir, &["--modules", &linux_modules()]);
    let killed = Arc::new(Mutex::new(false));
    let run = boot_kernel_with(
        &linux_kernel(),
        &initrd,
        &["--disk", disk],
        // `synced=$((40+2))`: the shell echoes the line as typed, so only the command's own
        // output has `synced=42`. Then the guest waits, never powering off by itself.
        b"mount /dev/vda /mnt && echo 'flushed by sync' > /mnt/kept.txt && sync && \
          echo synced=$((40+2))\n\
          sleep 600\n",
        |_| {},
        |pid, stdout| {
            let deadline = Instant::now() + Duration::from_secs(600);
            while Instant::now() < deadline {
                if String::from_utf8_lossy(&stdout.lock().unwrap()).contains("synced=42") {
                    // SAFETY: a signal to our own child, not waited for yet.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                    *killed.lock().unwrap() = true;
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        },
    );
    assert!(
        *killed.lock().unwrap(),
        "Linux never said synced=42: {run:?}"
    );
    // Killed: no status of its own (the run's -1), and no power-off.
    assert_eq!(run.status, -1, "{run:?}");
    assert!(!run.stdout_text().contains("reboot: Power down"), "{run:?}");
    assert_eq!(
        host("debugfs", &["-R", "cat /kept.txt", disk]),
        "flushed by sync\n"
    );
}

/// Runs `program` inside the network namespace of process `pid` (busybox's nsenter and ip in the
/// rig); returns whether it succeeded, and its output.
fn in_netns(pid: u32, program: &[&str]) -> (bool, String) {
    let target = pid.to_string();
    let output = Command::new("nsenter")
        .args(["-t", &target, "-n", "--"])
        .args(program)
        .output()
        .expect("nsenter (busybox)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// Linux on a virtio-net card whose other end is a TAP device in a network namespace of the
/// test's own (so nothing touches the rig's network): mini-kvm starts in a new namespace and
/// creates `tap0` there; the test gives it 10.0.2.1/24 and serves a 1 MiB file with busybox's
/// httpd. The guest, at 10.0.2.15, pings the host, fetches the file over TCP (wget) and prints
/// its MD5 sum, which must be the file's; the host pings the guest; then the guest powers off.
#[test]
#[ignore = "needs hardware KVM: run in the rig (tests/hw-kvm/run)"]
fn linux_on_a_tap_network_in_a_namespace() {
    require_kvm();
    let dir = scratch("linux-net");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let file: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(www.join("file"), &file).unwrap();
    let md5 = host("md5sum", &[www.join("file").to_str().unwrap()]);
    let md5 = md5.split_whitespace().next().unwrap().to_string();
    let initrd = make_initramfs_with(&dir, &["--modules", &linux_modules()]);
    let host_pinged = Arc::new(Mutex::new(String::new()));
    let httpd_slot = Arc::new(Mutex::new(None));
    let tap_appeared = Arc::new(Mutex::new(false));
    let run = boot_kernel_with(
        &linux_kernel(),
        &initrd,
        &["--net", "tap=tap0,mac=52:54:00:12:34:56"],
        b"uname -r\n\
          ip link set lo up; ip addr add 10.0.2.15/24 dev eth0; ip link set eth0 up\n\
          i=0; until ping -c 1 -W 1 10.0.2.1 > /dev/null; do i=$((i+1)); \
          [ $i -gt 100 ] && break; sleep 1; done; echo ping=$i\n\
          wget -q -O /tmp/file http://10.0.2.1:8080/file; echo md5=$(md5sum /tmp/file)\n\
          cat /sys/class/net/eth0/address\n\
          i=0; until wget -q -O /dev/null http://10.0.2.1:8080/pinged; do i=$((i+1)); \
          [ $i -gt 100 ] && break; sleep 1; done\n\
          poweroff -f\n",
        |command| {
            // SAFETY: unshare(2) only, in the child between fork and exec.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(command, || {
                    if libc::unshare(libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
        |pid, _| {
            // mini-kvm creates tap0 before the guest starts.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !in_netns(pid, &["ip", "link", "show", "tap0"]).0 {
                if Instant::now() > deadline {
                    return; // mini-kvm's stderr says why, below
                }
                thread::sleep(Duration::from_millis(100));
            }
            *tap_appeared.lock().unwrap() = true;
            for step in [
                &["ip", "link", "set", "lo", "up"][..],
                &["ip", "addr", "add", "10.0.2.1/24", "dev", "tap0"],
                &["ip", "link", "set", "tap0", "up"],
            ] {
                let (ok, output) = in_netns(pid, step);
                assert!(ok, "{step:?}: {output}");
            }
            let target = pid.to_string();
            let httpd = Command::new("nsenter")
                .args(["-t", &target, "-n", "--", "busybox", "httpd", "-f", "-p"])
                .arg("10.0.2.1:8080")
                .arg("-h")
                .arg(&www)
                .spawn()
                .expect("busybox httpd");
            // The host pings the guest once its card is up (within the boot's time).
            let deadline = Instant::now() + Duration::from_secs(240);
            while !in_netns(pid, &["ping", "-c", "1", "-W", "1", "10.0.2.15"]).0
                && Instant::now() < deadline
            {
                thread::sleep(Duration::from_millis(500));
            }
            let (_, output) = in_netns(pid, &["ping", "-c", "3", "10.0.2.15"]);
            *host_pinged.lock().unwrap() = output;
            // Tell the guest it may power off.
            std::fs::write(www.join("pinged"), "yes\n").unwrap();
            *httpd_slot.lock().unwrap() = Some(httpd);
        },
    );
    if let Some(mut httpd) = httpd_slot.lock().unwrap().take() {
        let _ = httpd.kill();
        let _ = httpd.wait();
    }
    assert!(
        *tap_appeared.lock().unwrap(),
        "tap0 never appeared: {run:?}"
    );
    assert_powered_off_from_the_shell(&run);
    let stdout = run.stdout_text();
    common::assert_contains_all(
        &stdout,
        &[
            "\nping=",
            // (`echo` joins md5sum's two fields with one space.)
            &format!("\nmd5={md5} /tmp/file"),
            "\n52:54:00:12:34:56",
        ],
    );
    assert!(
        !stdout.contains("\nping=101"),
        "the guest never reached the host: {run:?}"
    );
    let pinged = host_pinged.lock().unwrap().clone();
    assert!(
        pinged.contains("3 packets transmitted, 3 packets received"),
        "the host's ping of the guest: {pinged}\n{run:?}"
    );
}
