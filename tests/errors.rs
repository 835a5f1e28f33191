//! Every error a user can make, or meet on their machine: a clear message on stderr, a non-zero
//! exit status, no panic.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use common::{Run, is_root, mini_kvm, mini_kvm_command, mini_kvm_with, require_kvm};

const SETUP_ERROR: i32 = 1;
const USAGE_ERROR: i32 = 2;

fn assert_error(run: &Run, status: i32, message: &str) {
    assert_eq!(run.status, status, "{run:?}");
    assert!(
        run.stderr.contains(message),
        "stderr lacks {message:?}: {run:?}"
    );
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
}

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mini-kvm-test-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    // Readable by the unprivileged user of the permission tests.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn no_kvm_device_says_how_to_enable_kvm() {
    let run = mini_kvm_with(
        mini_kvm_command()
            .args(["run", "hello"])
            .env("MINI_KVM_DEVICE", "/nonexistent/kvm"),
        b"",
    );
    assert_error(
        &run,
        SETUP_ERROR,
        "mini-kvm: error: /nonexistent/kvm does not exist: this machine has no KVM.\n\
         To fix: enable hardware virtualization (Intel VT-x or AMD-V / SVM) in the firmware setup, \
         then load the module for your CPU (`sudo modprobe kvm_intel` or `sudo modprobe kvm_amd`).",
    );
}

#[test]
fn permission_denied_on_kvm_says_which_group() {
    let expected_path;
    let run = if is_root() {
        // Root may open anything: run as `nobody` against the real /dev/kvm instead, which must
        // then not be open to everyone (it is crw-rw---- or crw------- on a normal machine).
        let mode = fs::metadata("/dev/kvm")
            .expect("/dev/kvm")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o006,
            0,
            "/dev/kvm is world-accessible: cannot test EACCES here"
        );
        expected_path = "/dev/kvm".to_string();
        mini_kvm_with(
            mini_kvm_command()
                .args(["run", "hello"])
                .uid(65534)
                .gid(65534),
            b"",
        )
    } else {
        let dir = scratch("eacces");
        let device = dir.join("kvm");
        fs::write(&device, b"").unwrap();
        fs::set_permissions(&device, fs::Permissions::from_mode(0o000)).unwrap();
        expected_path = device.display().to_string();
        mini_kvm_with(
            mini_kvm_command()
                .args(["run", "hello"])
                .env("MINI_KVM_DEVICE", &device),
            b"",
        )
    };
    assert_error(
        &run,
        SETUP_ERROR,
        &format!(
            "mini-kvm: error: permission denied opening {expected_path}: your user may not use KVM.\n\
             To fix: add yourself to the group that owns {expected_path} (usually `kvm`): \
             `sudo usermod -aG kvm $USER`"
        ),
    );
}

#[test]
fn a_file_that_is_not_kvm_is_reported() {
    let run = mini_kvm_with(
        mini_kvm_command()
            .args(["run", "hello"])
            .env("MINI_KVM_DEVICE", "/dev/null"),
        b"",
    );
    assert_error(
        &run,
        SETUP_ERROR,
        "mini-kvm: error: /dev/null is not a KVM device",
    );
}

#[test]
fn unknown_guest_lists_the_builtin_names() {
    let run = mini_kvm(&["run", "nosuch"], b"");
    assert_error(
        &run,
        SETUP_ERROR,
        "mini-kvm: error: unknown guest 'nosuch': the built-in guests are os, counter, echo, \
         fibonacci, hctest, hello, matrix, minimal, multiplication, multiplication_short, \
         vga_text, interrupts, mandelbrot, pm_hello, pm_paging, smp, long_hello; \
         to run a file, give its path (e.g. ./nosuch)",
    );
}

#[test]
fn missing_file() {
    let run = mini_kvm(&["run", "./no/such/guest.bin"], b"");
    assert_error(
        &run,
        SETUP_ERROR,
        "mini-kvm: error: cannot read guest image ./no/such/guest.bin: No such file or directory",
    );
}

#[test]
fn directory_instead_of_a_file() {
    let dir = scratch("dir");
    let run = mini_kvm(&["run", dir.to_str().unwrap()], b"");
    assert_error(
        &run,
        SETUP_ERROR,
        &format!(
            "mini-kvm: error: guest image {} is a directory, not a file",
            dir.display()
        ),
    );
}

#[test]
fn unreadable_file() {
    let dir = scratch("unreadable");
    let image = dir.join("secret.bin");
    fs::write(&image, [0xf4]).unwrap();
    fs::set_permissions(&image, fs::Permissions::from_mode(0o000)).unwrap();
    let mut command = mini_kvm_command();
    command.args(["run", image.to_str().unwrap()]);
    if is_root() {
        // Root reads any file: read it as `nobody`.
        command.uid(65534).gid(65534);
    }
    let run = mini_kvm_with(&mut command, b"");
    assert_error(
        &run,
        SETUP_ERROR,
        &format!(
            "mini-kvm: error: cannot read guest image {}: Permission denied",
            image.display()
        ),
    );
}

#[test]
fn empty_file() {
    require_kvm();
    let dir = scratch("empty");
    let image = dir.join("empty.bin");
    fs::write(&image, b"").unwrap();
    let run = mini_kvm(&["run", image.to_str().unwrap()], b"");
    assert_error(
        &run,
        SETUP_ERROR,
        "mini-kvm: error: guest image empty.bin is empty: there is nothing to run",
    );
}

#[test]
fn image_larger_than_real_mode_can_address() {
    require_kvm();
    let dir = scratch("huge");
    let image = dir.join("huge.bin");
    fs::write(&image, vec![0x90; 2 << 20]).unwrap();
    let run = mini_kvm(&["run", "--mem", "4M", image.to_str().unwrap()], b"");
    assert_error(
        &run,
        SETUP_ERROR,
        "mini-kvm: error: guest image huge.bin is 2097152 bytes, but only 983040 bytes fit \
         between the load address 0x10000 and the 1 MiB that real mode can address (0x100000): \
         a real-mode program cannot be that large",
    );
}

#[test]
fn image_larger_than_guest_memory() {
    require_kvm();
    let dir = scratch("big");
    let image = dir.join("big.bin");
    fs::write(&image, vec![0x90; 100 << 10]).unwrap();
    let run = mini_kvm(&["run", "--mem", "128K", image.to_str().unwrap()], b"");
    assert_error(
        &run,
        SETUP_ERROR,
        "mini-kvm: error: guest image big.bin is 102400 bytes, but only 65536 bytes fit between \
         the load address 0x10000 and the end of guest RAM (0x20000): give the guest more \
         memory with --mem",
    );
}

#[test]
fn an_elf_file_of_no_known_class_is_refused() {
    require_kvm();
    let dir = scratch("elf");
    let image = dir.join("kernel.elf");
    let mut bytes = b"\x7fELF".to_vec();
    bytes.resize(512, 0);
    fs::write(&image, bytes).unwrap();
    let run = mini_kvm(&["run", image.to_str().unwrap()], b"");
    assert_error(
        &run,
        SETUP_ERROR,
        "mini-kvm: error: kernel.elf is not an ELF executable mini-kvm can load: its class (byte 4) \
         is neither 1 (ELF32) nor 2 (ELF64)",
    );
}

#[test]
fn bad_memory_sizes() {
    for (value, message) in [
        (
            "12Q",
            "'12Q' is not a memory size: give a number with an optional K, M or G suffix",
        ),
        ("lots", "'lots' is not a memory size"),
        (
            "64K",
            "memory size 64K is out of range: it must be between 128K and 64G",
        ),
        ("100G", "memory size 100G is out of range"),
        ("1000001", "memory size 1000001 is not a multiple of 4 KiB"),
    ] {
        let run = mini_kvm(&["run", "--mem", value, "hello"], b"");
        assert_error(&run, USAGE_ERROR, message);
        assert!(run.stderr.contains("--mem <SIZE>"), "{run:?}");
    }
}

#[test]
fn bad_timeouts() {
    for value in ["0", "-1", "soon"] {
        let run = mini_kvm(&["run", &format!("--timeout={value}"), "hello"], b"");
        assert_error(
            &run,
            USAGE_ERROR,
            &format!("'{value}' is not a timeout: give a positive number of seconds"),
        );
    }
}

#[test]
fn bad_flags_and_missing_arguments() {
    let run = mini_kvm(&["run", "--frobnicate", "hello"], b"");
    assert_error(&run, USAGE_ERROR, "unexpected argument '--frobnicate'");
    let run = mini_kvm(&["run"], b"");
    assert_error(
        &run,
        USAGE_ERROR,
        "the following required arguments were not provided",
    );
    let run = mini_kvm(&["launch", "hello"], b"");
    assert_error(&run, USAGE_ERROR, "unrecognized subcommand 'launch'");
}

#[test]
fn help_documents_every_flag_with_an_example() {
    let run = mini_kvm(&["run", "--help"], b"");
    assert_eq!(run.status, 0);
    let help = run.stdout_text();
    for flag in ["--mem", "--timeout", "--verbose", "--stats"] {
        let line = help
            .lines()
            .find(|line| line.trim_start().starts_with(flag) || line.contains(&format!(", {flag}")))
            .unwrap_or_else(|| panic!("{flag} missing from --help:\n{help}"));
        let described: String = help.split(line).nth(1).unwrap().lines().take(4).collect();
        assert!(
            described.contains("e.g.") || line.contains("e.g."),
            "{flag} has no example:\n{help}"
        );
    }
}

#[test]
fn the_terminal_view_without_a_terminal_is_refused() {
    require_kvm();
    // The test's stdin and stdout are pipes.
    let run = mini_kvm(&["run", "--tui", "hello"], b"");
    assert_error(
        &run,
        SETUP_ERROR,
        "mini-kvm: error: --tui needs a terminal, and neither stdin nor stdout is a terminal: \
         run it in a terminal, or leave out --tui",
    );
}

#[test]
fn images_that_are_not_regular_files_are_refused_before_reading() {
    require_kvm();
    let run = mini_kvm(&["run", "/dev/zero"], b"");
    assert_error(
        &run,
        SETUP_ERROR,
        "mini-kvm: error: guest image /dev/zero is a character device, not a regular file: \
         mini-kvm reads only regular files",
    );
    // A FIFO nobody writes to: opening it must not wait for a writer.
    let dir = scratch("fifo");
    let fifo = dir.join("image.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let run = mini_kvm(&["run", "--timeout", "2", fifo.to_str().unwrap()], b"");
    assert_error(
        &run,
        SETUP_ERROR,
        &format!(
            "mini-kvm: error: guest image {} is a FIFO, not a regular file: mini-kvm reads only \
             regular files",
            fifo.display()
        ),
    );
}

#[test]
fn an_image_larger_than_guest_memory_is_refused_before_reading() {
    require_kvm();
    let dir = scratch("sparse");
    let image = dir.join("huge.bin");
    // Sparse: 5 GiB long, no blocks on disk.
    fs::File::create(&image).unwrap().set_len(5 << 30).unwrap();
    let run = mini_kvm(&["run", "--mem", "2G", image.to_str().unwrap()], b"");
    let _ = fs::remove_file(&image);
    assert_error(
        &run,
        SETUP_ERROR,
        &format!(
            "mini-kvm: error: guest image {} is 5368709120 bytes, more than the guest's \
             2147483648 bytes of RAM: give the guest more memory with --mem, or check the file",
            image.display()
        ),
    );
}

#[test]
fn the_timeout_bounds_reading_an_image() {
    require_kvm();
    let dir = scratch("slow-read");
    let image = dir.join("big.bin");
    // Sparse, 1 GiB: no disk reads it in 1 ms (it is read 16 MiB at a time, the clock checked
    // between chunks).
    fs::File::create(&image).unwrap().set_len(1 << 30).unwrap();
    let path = image.to_str().unwrap();
    let run = mini_kvm(&["run", "--mem", "2G", "--timeout", "0.001", path], b"");
    let _ = fs::remove_file(&image);
    let start = format!(
        "mini-kvm: error: guest image {path}: reading it took longer than --timeout (0.001 s; "
    );
    assert_error(&run, SETUP_ERROR, &start);
    let (read, rest) = run.stderr[run.stderr.find(&start).unwrap() + start.len()..]
        .split_once(' ')
        .unwrap();
    assert_eq!(
        rest, "of 1073741824 bytes read), so it was not run\n",
        "{run:?}"
    );
    let read: u64 = read.parse().unwrap();
    assert!(
        read > 0 && read < 1 << 30 && read.is_multiple_of(16 << 20),
        "{run:?}"
    );
}
