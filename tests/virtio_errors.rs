//! The virtio options' errors (`--disk`, `--net`, `--rng`, `mini-kvm initramfs --modules`): each
//! a clear message and a non-zero status before any guest runs, never a panic. What the devices
//! do for a guest is in tests/os_disk.rs (the teaching OS, here) and tests/linux.rs (the rig).

mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use common::{
    assert_error, is_root, mini_kvm, mini_kvm_command, mini_kvm_with, require_kvm, scratch,
};

const SETUP_ERROR: i32 = 1;
const USAGE_ERROR: i32 = 2;

/// A directory `nobody` can read, with a 64 KiB image in it.
fn image(test: &str) -> String {
    let dir = scratch(test);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let image = dir.join("disk.img");
    fs::write(&image, vec![0u8; 64 * 1024]).unwrap();
    image.to_str().unwrap().to_string()
}

#[test]
fn a_missing_disk_image_is_named() {
    let run = mini_kvm(&["run", "--disk", "/no/such/disk.img", "hello"], b"");
    assert_error(
        &run,
        SETUP_ERROR,
        "mini-kvm: error: cannot open the disk image /no/such/disk.img: No such file or directory \
         (os error 2)\n",
    );
}

/// A directory, a FIFO nobody writes to (opening it must not wait for a writer) and a device
/// are no disk images, read-write or read-only.
#[test]
fn only_a_regular_file_is_a_disk_image() {
    let dir = scratch("disk-not-a-file");
    let fifo = dir.join("fifo");
    let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
    for path in [dir.to_str().unwrap(), fifo.to_str().unwrap(), "/dev/zero"] {
        for disk in [path.to_string(), format!("{path},ro")] {
            let run = mini_kvm(&["run", "--disk", &disk, "hello"], b"");
            assert_error(
                &run,
                SETUP_ERROR,
                &format!(
                    "mini-kvm: error: the disk image {path} is not a regular file: --disk takes \
                     a raw image file (e.g. made with truncate -s 64M disk.img)\n"
                ),
            );
        }
    }
}

/// An image another process has locked (as a running mini-kvm locks its disks) is refused, for
/// writing and for reading; two read-only users may share one.
#[test]
fn a_locked_image_is_refused_and_a_read_only_one_is_shared() {
    require_kvm();
    let path = image("disk-locked");
    let holder = fs::File::open(&path).unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
    for disk in [path.clone(), format!("{path},ro")] {
        let run = mini_kvm(&["run", "--disk", &disk, "hello"], b"");
        assert_error(
            &run,
            SETUP_ERROR,
            &format!(
                "mini-kvm: error: the disk image {path} is in use by another program that locked \
                 it (another mini-kvm?); give each guest its own image, or add ,ro to share it \
                 read-only\n"
            ),
        );
    }
    // A shared lock, as a read-only mini-kvm holds: another read-only user runs.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_SH) }, 0);
    let ro = format!("{path},ro");
    let run = mini_kvm(&["run", "--disk", &ro, "hello"], b"");
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout_text(), "Hello, KVM!\n", "{run:?}");
    // ... but not a writer.
    let run = mini_kvm(&["run", "--disk", &path, "hello"], b"");
    assert_error(
        &run,
        SETUP_ERROR,
        &format!("mini-kvm: error: the disk image {path} is in use by another program"),
    );
}

/// An image the user may read but not write: the error says to add ,ro, and with ,ro it is
/// taken.
#[test]
fn an_image_the_user_cannot_write_needs_ro() {
    require_kvm();
    let path = image("disk-readonly");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
    let run_as_user = |disk: &str| {
        let mut command = mini_kvm_command();
        command.args(["run", "--disk", disk, "hello"]);
        if is_root() {
            // Root writes any file: open it as `nobody`.
            command.uid(65534).gid(65534);
        }
        mini_kvm_with(&mut command, b"")
    };
    assert_error(
        &run_as_user(&path),
        SETUP_ERROR,
        &format!(
            "mini-kvm: error: cannot open the disk image {path}: Permission denied (os error 13) \
             (to use it read-only, add ,ro: --disk FILE,ro)\n"
        ),
    );
    let run = run_as_user(&format!("{path},ro"));
    if is_root() {
        // `nobody` may not open /dev/kvm either, which mini-kvm opens after the disk images:
        // that this is the error shows the read-only image was taken.
        assert_error(
            &run,
            SETUP_ERROR,
            "mini-kvm: error: permission denied opening /dev/kvm",
        );
    } else {
        assert_eq!(run.status, 0, "{run:?}");
        assert_eq!(run.stdout_text(), "Hello, KVM!\n", "{run:?}");
    }
}

#[test]
fn disks_and_cards_belong_to_one_guest() {
    let path = image("disk-two-guests");
    let run = mini_kvm(&["run", "--disk", &path, "hello", "hello"], b"");
    assert_error(
        &run,
        SETUP_ERROR,
        "mini-kvm: error: --disk with 2 guests: a disk image belongs to one guest; run the guest \
         that needs it alone\n",
    );
    let run = mini_kvm(&["run", "--net", "tap=tap0", "hello", "hello"], b"");
    assert_error(
        &run,
        SETUP_ERROR,
        "mini-kvm: error: --net with 2 guests: a TAP device belongs to one guest; run the guest \
         that needs it alone\n",
    );
    // The entropy device is for every guest.
    require_kvm();
    let run = mini_kvm(&["run", "--rng", "hello", "hello"], b"");
    assert_eq!(run.status, 0, "{run:?}");
    // The two guests' lines come in either order.
    let stdout = run.stdout_text();
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        ["[1:hello] Hello, KVM!", "[2:hello] Hello, KVM!"],
        "{run:?}"
    );
    assert_eq!(
        run.stderr,
        "guest      status  how it ended\n[1:hello]       0  exited 0\n[2:hello]       0  exited 0\n",
        "{run:?}"
    );
}

#[test]
fn at_most_eight_virtio_devices() {
    let path = image("disk-nine");
    let mut args = vec!["run"];
    for _ in 0..8 {
        args.extend(["--disk", &path]);
    }
    args.extend(["--rng", "hello"]);
    let run = mini_kvm(&args, b"");
    assert_error(
        &run,
        SETUP_ERROR,
        "mini-kvm: error: 9 virtio devices is too many: a guest has 8 virtio slots (each --disk \
         and --net takes one, and --rng one)\n",
    );
}

#[test]
fn bad_disk_and_net_arguments() {
    for (args, message) in [
        (
            &["--disk", ",ro"][..],
            "error: invalid value ',ro' for '--disk <FILE[,ro]>': ',ro' is not a disk: give an \
             image file, with ,ro to make it read-only (e.g. --disk disk.img,ro)",
        ),
        (
            &["--net", "tap0"],
            "error: invalid value 'tap0' for '--net <tap=NAME[,mac=MAC]>': 'tap0' is not a \
             network card: give tap=NAME, and ,mac=52:54:00:12:34:56 for a fixed address (e.g. \
             --net tap=tap0)",
        ),
        // A multicast MAC (bit 0 of the first byte) is no card's address.
        (
            &["--net", "tap=tap0,mac=01:00:5e:00:00:01"],
            "'tap=tap0,mac=01:00:5e:00:00:01' is not a network card",
        ),
        (&["--net", "tap=tap0,mac=52:54:00"], "is not a network card"),
    ] {
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        full.push("hello");
        assert_error(&mini_kvm(&full, b""), USAGE_ERROR, message);
    }
    let run = mini_kvm(&["run", "--net", "tap=a/b", "hello"], b"");
    assert_error(
        &run,
        SETUP_ERROR,
        "mini-kvm: error: 'a/b' is not a TAP interface name: give 1 to 15 letters, digits, '-' or \
         '_' (e.g. --net tap=tap0)\n",
    );
}

/// Without CAP_NET_ADMIN (as `nobody`), creating a TAP device fails, and the error says both
/// ways out.
#[test]
fn creating_a_tap_device_needs_privilege() {
    let mut command = mini_kvm_command();
    command.args(["run", "--net", "tap=mkvm-nobody", "hello"]);
    if is_root() {
        command.uid(65534).gid(65534);
    }
    let run = mini_kvm_with(&mut command, b"");
    assert_error(
        &run,
        SETUP_ERROR,
        "mini-kvm: error: cannot create or attach the TAP device mkvm-nobody: Operation not \
         permitted (os error 1) (creating a TAP device needs root or CAP_NET_ADMIN; or create it \
         once for your user: sudo ip tuntap add mkvm-nobody mode tap user $USER)\n",
    );
}

#[test]
fn initramfs_modules_need_a_module_directory() {
    let dir = scratch("initramfs-modules");
    let output = dir.join("initrd.cpio");
    let run = mini_kvm(
        &[
            "initramfs",
            "--busybox",
            "/bin/busybox",
            "-o",
            output.to_str().unwrap(),
            "--modules",
            dir.to_str().unwrap(),
        ],
        b"",
    );
    assert_error(
        &run,
        SETUP_ERROR,
        &format!(
            "mini-kvm: error: {} has no modules.dep: give --modules a kernel's module directory, \
             e.g. /lib/modules/$(uname -r) (it comes with the linux-image package)\n",
            dir.display()
        ),
    );
    assert!(!output.exists(), "nothing written");
}
