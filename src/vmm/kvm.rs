//! Opening `/dev/kvm`, with errors that tell the user how to fix their machine, and naming the
//! host's KVM module (kvm_intel, kvm_amd, or kvm_pvm, a software KVM without VT-x/AMD-V).

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{FromRawFd, IntoRawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kvm_ioctls::Kvm;
use thiserror::Error;

/// The KVM device. `MINI_KVM_DEVICE` overrides it (the tests use it to check the error messages).
pub const DEFAULT_KVM_DEVICE: &str = "/dev/kvm";
pub const KVM_DEVICE_ENV: &str = "MINI_KVM_DEVICE";

#[derive(Debug, Error)]
pub enum KvmError {
    #[error(
        "{path} does not exist: this machine has no KVM.\n\
         To fix: enable hardware virtualization (Intel VT-x or AMD-V / SVM) in the firmware setup, \
         then load the module for your CPU (`sudo modprobe kvm_intel` or `sudo modprobe kvm_amd`). \
         Inside a virtual machine, enable nested virtualization on the host."
    )]
    NoDevice { path: PathBuf },
    #[error(
        "permission denied opening {path}: your user may not use KVM.\n\
         To fix: add yourself to the group that owns {path} (usually `kvm`): \
         `sudo usermod -aG kvm $USER`, then log out and back in; check with `ls -l {path}` \
         (it should be `crw-rw---- root kvm`)."
    )]
    PermissionDenied { path: PathBuf },
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path} is not a KVM device: {source}")]
    NotKvm {
        path: PathBuf,
        source: kvm_ioctls::Error,
    },
    #[error("KVM API version {found} is not supported (mini-kvm needs version 12)")]
    ApiVersion { found: i32 },
}

/// The KVM device path in use: `$MINI_KVM_DEVICE`, or `/dev/kvm`.
pub fn kvm_device_path() -> PathBuf {
    std::env::var_os(KVM_DEVICE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_KVM_DEVICE))
}

/// Opens the KVM device (step 1 of docs/kvm-api.md) and checks its API version.
pub fn open_kvm() -> Result<Kvm, KvmError> {
    let path = kvm_device_path();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => KvmError::NoDevice { path: path.clone() },
            io::ErrorKind::PermissionDenied => KvmError::PermissionDenied { path: path.clone() },
            _ => KvmError::Open {
                path: path.clone(),
                source,
            },
        })?;
    // SAFETY: the descriptor was just opened by us and its ownership moves into `Kvm`.
    let kvm = unsafe { Kvm::from_raw_fd(file.into_raw_fd()) };
    let version = kvm.get_api_version();
    if version < 0 {
        return Err(KvmError::NotKvm {
            path,
            source: kvm_ioctls::Error::last(),
        });
    }
    if version != 12 {
        return Err(KvmError::ApiVersion { found: version });
    }
    Ok(kvm)
}

/// `/dev/kvm`, opened once per process and shared by every VM it creates (a VM holds its own
/// descriptor; this one only creates VMs and answers capability questions). A failed open is
/// not remembered: the next call tries again and reports again.
pub fn shared_kvm() -> Result<&'static Kvm, KvmError> {
    static KVM: OnceLock<Kvm> = OnceLock::new();
    if let Some(kvm) = KVM.get() {
        return Ok(kvm);
    }
    let kvm = open_kvm()?;
    Ok(KVM.get_or_init(|| kvm))
}

/// The host's KVM: which vendor module runs the guests. Some KVM behaviour differs by module
/// (kvm_pvm runs every instruction in KVM's instruction emulator: docs/testing.md), and the
/// places that care match on this rather than on the module's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKvm {
    /// `kvm_pvm`: a software KVM, without VT-x or AMD-V.
    Pvm,
    /// `kvm_intel`: hardware virtualization, Intel VT-x.
    Intel,
    /// `kvm_amd`: hardware virtualization, AMD-V.
    Amd,
    /// No module we know of is loaded.
    Unknown,
}

impl HostKvm {
    /// The host's KVM, read from /sys/module once.
    pub fn detect() -> HostKvm {
        static HOST: OnceLock<HostKvm> = OnceLock::new();
        *HOST.get_or_init(|| HostKvm::detect_in(Path::new("/sys/module")))
    }

    fn detect_in(sys_module: &Path) -> HostKvm {
        [HostKvm::Pvm, HostKvm::Intel, HostKvm::Amd]
            .into_iter()
            .find(|host| sys_module.join(host.module()).exists())
            .unwrap_or(HostKvm::Unknown)
    }

    /// The module's name: `kvm_pvm`, `kvm_intel`, `kvm_amd`, or `unknown`.
    pub fn module(self) -> &'static str {
        match self {
            HostKvm::Pvm => "kvm_pvm",
            HostKvm::Intel => "kvm_intel",
            HostKvm::Amd => "kvm_amd",
            HostKvm::Unknown => "unknown",
        }
    }

    /// What the module means for guests, in a few words.
    pub fn description(self) -> &'static str {
        match self {
            HostKvm::Pvm => {
                "software KVM: every guest instruction runs in KVM's instruction emulator"
            }
            HostKvm::Intel => "hardware virtualization (Intel VT-x)",
            HostKvm::Amd => "hardware virtualization (AMD-V)",
            HostKvm::Unknown => "unknown KVM module",
        }
    }
}

impl std::fmt::Display for HostKvm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.module())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_the_module_loaded_under_sys_module() {
        let sys_module = std::env::temp_dir().join(format!("mini-kvm-sys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&sys_module);
        std::fs::create_dir_all(&sys_module).unwrap();
        assert_eq!(HostKvm::detect_in(&sys_module), HostKvm::Unknown);
        std::fs::create_dir(sys_module.join("kvm_amd")).unwrap();
        assert_eq!(HostKvm::detect_in(&sys_module), HostKvm::Amd);
        assert_eq!(HostKvm::Amd.to_string(), "kvm_amd");
        std::fs::remove_dir_all(&sys_module).unwrap();
    }
}
