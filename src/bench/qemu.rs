//! QEMU, when it is installed, running the same PVH kernels as mini-kvm: `-M microvm` with the
//! debug console at 0xe9 and isa-debug-exit at 0xf4, the conventions mini-kvm supports too.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The QEMU binary and its version line, if QEMU is installed.
pub struct Qemu {
    pub binary: PathBuf,
    pub version: String,
}

impl Qemu {
    pub fn find() -> Option<Qemu> {
        let output = Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .ok()?;
        let version = String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        output.status.success().then(|| Qemu {
            binary: PathBuf::from("qemu-system-x86_64"),
            version,
        })
    }

    /// The command that boots `kernel` on a microvm with accelerator `accel` ("kvm" or "tcg").
    pub fn microvm(&self, accel: &str, kernel: &Path) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(["-M", "microvm", "-accel", accel, "-m", "16M"])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-nographic",
                "-display",
                "none",
            ])
            .args(["-chardev", "stdio,id=console"])
            .args(["-device", "isa-debugcon,iobase=0xe9,chardev=console"])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
            .arg("-kernel")
            .arg(kernel);
        command
    }
}
