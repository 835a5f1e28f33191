//! Snapshots: a running guest saved to a directory, and a new process that goes on from it
//! (docs/snapshot.md walks through every part).
//!
//! A snapshot directory holds two files:
//!
//! - `state.json`: the [`Snapshot`], versioned text a person can read: the host it was taken
//!   on, the machine (RAM layout, the boot facts the firmware devices answer with), each vCPU
//!   (vcpu_state.rs), the VM's interrupt controllers, PIT and clock (vm_state.rs), and each
//!   device's state by name (src/devices/state.rs);
//! - `ram`: guest RAM, sparse (ram.rs), mapped copy-on-write at restore.
//!
//! The vCPU that sees the moment come saves the snapshot itself, between two exits
//! ([`SnapshotTaker`]); builder.rs builds a VM from one ([`load`] checks it first).

pub mod hex;
pub mod ram;
pub mod vcpu_state;
pub mod vm_state;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kvm_ioctls::{VcpuFd, VmFd};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use vm_memory::GuestMemoryMmap;

use super::kvm::HostKvm;
use crate::console::{GuestInput, INPUT_BUFFER};
use crate::devices::{Bus, DeviceState};
use ram::RamRegion;
use vcpu_state::{VcpuCapabilities, VcpuState};
use vm_state::VmState;

/// What `state.json` says it is.
pub const FORMAT: &str = "mini-kvm snapshot";
/// The version of the format this mini-kvm writes and reads. Any change to what the state file
/// holds or means makes a new version; an older one is refused, not guessed at.
pub const VERSION: u32 = 1;
pub const STATE_FILE: &str = "state.json";
pub const RAM_FILE: &str = "ram";

#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("no snapshot at {dir}: {reason}")]
    NotFound { dir: PathBuf, reason: String },
    #[error("{path} is not a readable snapshot state: {reason}")]
    BadState { path: PathBuf, reason: String },
    #[error(
        "{path} is a version {found} snapshot, and this mini-kvm reads version {VERSION} only: \
         take the snapshot again with this mini-kvm"
    )]
    OtherVersion { path: PathBuf, found: u64 },
    #[error(
        "the snapshot was taken on {saved}, and this host is {here}: a snapshot goes on only on \
         the same host KVM and CPU vendor (its CPU state and MSRs are theirs)"
    )]
    OtherHost { saved: String, here: String },
    #[error(
        "{path} is {size} bytes, and the snapshot's guest RAM is {expected} bytes: the RAM file \
         is cut short or belongs to another snapshot"
    )]
    RamSize {
        path: PathBuf,
        size: u64,
        expected: u64,
    },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot map the snapshot's RAM: {0}")]
    Map(String),
    #[error("{call} failed: {source}")]
    Ioctl {
        call: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("the snapshot's state is not valid: {0}")]
    Invalid(String),
    #[error("the {device} device cannot be saved in a snapshot yet")]
    DeviceNotSaved { device: &'static str },
}

/// The host a snapshot was taken on, checked at restore.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Host {
    /// The KVM module: kvm_pvm, kvm_intel or kvm_amd.
    pub kvm: String,
    /// CPUID leaf 0's vendor string: GenuineIntel, AuthenticAMD, ...
    pub cpu_vendor: String,
}

impl Host {
    pub fn this_one() -> Host {
        Host {
            kvm: HostKvm::detect().module().to_string(),
            cpu_vendor: cpu_vendor(),
        }
    }

    fn describe(&self) -> String {
        format!("{} on an {} CPU", self.kvm, self.cpu_vendor)
    }
}

/// CPUID leaf 0's 12-character vendor string (EBX, EDX, ECX).
fn cpu_vendor() -> String {
    let leaf = std::arch::x86_64::__cpuid(0);
    let bytes: Vec<u8> = [leaf.ebx, leaf.edx, leaf.ecx]
        .iter()
        .flat_map(|register| register.to_le_bytes())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The machine a restored VM is built as: what the builder made it from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Machine {
    /// The guest's name, for messages.
    pub guest: String,
    pub ram: Vec<RamRegion>,
    /// The in-kernel irqchip and PIT (every guest but a real-mode flat binary has them).
    pub irqchip: bool,
    /// A Linux kernel: its console is the UART alone.
    pub linux: bool,
    /// `--cmdline`, which fw_cfg hands out.
    pub cmdline: Option<String>,
    /// The memory map fw_cfg hands out.
    pub e820: Vec<E820Entry>,
}

/// One range of the memory map.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct E820Entry {
    #[serde(with = "hex::u64_text")]
    pub address: u64,
    #[serde(with = "hex::u64_text")]
    pub length: u64,
    /// 1 RAM, 2 reserved, 3 ACPI tables.
    #[serde(rename = "type")]
    pub type_: u32,
}

impl Machine {
    /// The memory map as (address, length, type), as fw_cfg takes it.
    pub fn e820_map(&self) -> Vec<(u64, u64, u32)> {
        self.e820
            .iter()
            .map(|entry| (entry.address, entry.length, entry.type_))
            .collect()
    }

    /// A memory map as the snapshot keeps it.
    pub fn e820_entries(map: &[(u64, u64, u32)]) -> Vec<E820Entry> {
        map.iter()
            .map(|&(address, length, type_)| E820Entry {
                address,
                length,
                type_,
            })
            .collect()
    }
}

/// Everything in `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub format: String,
    pub version: u32,
    pub host: Host,
    pub machine: Machine,
    pub vcpus: Vec<VcpuState>,
    /// The interrupt controllers, PIT and clock: `None` without the irqchip.
    pub vm: Option<VmState>,
    /// Each device's state by name; `null` for a device that keeps none.
    pub devices: BTreeMap<String, serde_json::Value>,
    /// The CLOCK hypercall's nanoseconds since the guest started.
    pub hypercall_clock_ns: u64,
    /// Input that had arrived (typed ahead) and that no device had taken yet: the restored
    /// guest gets it before its new stdin.
    pub input: Vec<u8>,
}

/// `--snapshot DIR`: what the vCPU needs to save the guest when the moment comes.
pub struct SnapshotTaker {
    pub dir: PathBuf,
    /// `--snapshot-on-output`: set by the guest's output when it has printed the text
    /// (console/mod.rs).
    pub seen: Option<Arc<AtomicBool>>,
    /// `--snapshot-after-exits`.
    pub after_exits: Option<u64>,
    pub vm_fd: Arc<VmFd>,
    pub machine: Machine,
    pub capabilities: VcpuCapabilities,
    /// The guest's input, for the bytes typed ahead.
    pub input: GuestInput,
}

/// What a snapshot took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub dir: PathBuf,
    /// Guest RAM, and the bytes of it written (the rest are holes).
    pub ram_size: u64,
    pub ram_written: u64,
}

impl SnapshotTaker {
    /// Has the moment come, after `exits` VM exits?
    pub fn due(&self, exits: u64) -> bool {
        self.seen
            .as_ref()
            .is_some_and(|seen| seen.load(Ordering::Acquire))
            || self.after_exits.is_some_and(|count| exits >= count)
    }

    /// Saves the guest. `vcpu` is out of KVM_RUN with its last access completed; no other
    /// thread runs guest code (one vCPU). `buses`: port I/O and MMIO, with every device.
    pub fn take(
        &self,
        vcpu: &VcpuFd,
        memory: &GuestMemoryMmap,
        buses: [&Bus; 2],
        hypercall_clock_ns: u64,
    ) -> Result<Taken, SnapshotError> {
        // The guest stops here for this process: no more input is handed to its devices (the
        // event loop would otherwise move bytes from the input into the UART or the keyboard
        // while they are saved, and they would be in neither part, or in both).
        self.input.cancel();
        let vcpus = vec![vcpu_state::capture(vcpu, &self.capabilities)?];
        let vm = if self.machine.irqchip {
            Some(vm_state::capture(&self.vm_fd)?)
        } else {
            None
        };
        let mut devices = BTreeMap::new();
        for (name, device) in buses.iter().flat_map(|bus| bus.devices()) {
            let state = device
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .save_state();
            match state {
                DeviceState::Stateless => devices.insert(name.to_string(), serde_json::Value::Null),
                DeviceState::Saved(value) => devices.insert(name.to_string(), value),
                DeviceState::NotSaved => {
                    return Err(SnapshotError::DeviceNotSaved { device: name });
                }
            };
        }
        let snapshot = Snapshot {
            format: FORMAT.to_string(),
            version: VERSION,
            host: Host::this_one(),
            machine: self.machine.clone(),
            vcpus,
            vm,
            devices,
            hypercall_clock_ns,
            input: self.input.waiting(),
        };
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| SnapshotError::Io { what, path, source }
        };
        prepare_dir(&self.dir)?;
        let ram_path = self.dir.join(RAM_FILE);
        let ram_written = ram::write(memory, &ram_path)?;
        // The state last, and whole (written aside, then renamed): a directory with a state
        // file has its RAM file complete.
        let state_path = self.dir.join(STATE_FILE);
        let partial = self.dir.join(format!("{STATE_FILE}.partial"));
        let mut text = serde_json::to_string_pretty(&snapshot)
            .map_err(|error| SnapshotError::Invalid(error.to_string()))?;
        text.push('\n');
        fs::write(&partial, text).map_err(io("write", &partial))?;
        fs::rename(&partial, &state_path).map_err(io("write", &state_path))?;
        Ok(Taken {
            dir: self.dir.clone(),
            ram_size: self.machine.ram.iter().map(|region| region.size).sum(),
            ram_written,
        })
    }
}

/// Makes the snapshot's directory, if it does not exist: before the guest runs, so that a
/// directory that cannot be made is an error before anything else happens.
pub fn prepare_dir(dir: &Path) -> Result<(), SnapshotError> {
    fs::create_dir_all(dir).map_err(|source| SnapshotError::Io {
        what: "create the snapshot directory",
        path: dir.to_path_buf(),
        source,
    })
}

/// The most of a state file `restore` reads. A one-vCPU guest's is about 35 KB; the bound keeps
/// a file that is not a snapshot (or a hostile one) from filling memory before it is parsed.
const MAX_STATE_BYTES: u64 = 16 << 20;

/// The state file's text, or None when it is longer than [`MAX_STATE_BYTES`] (read no further).
fn read_bounded(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let mut text = String::new();
    fs::File::open(path)?
        .take(MAX_STATE_BYTES + 1)
        .read_to_string(&mut text)?;
    Ok((text.len() as u64 <= MAX_STATE_BYTES).then_some(text))
}

/// Reads and checks `dir`'s state file: its format, version and host, before anything else is
/// looked at, so that a snapshot of another kind gets the one error that says so.
pub fn load(dir: &Path) -> Result<Snapshot, SnapshotError> {
    if !dir.is_dir() {
        return Err(SnapshotError::NotFound {
            dir: dir.to_path_buf(),
            reason: "there is no such directory".into(),
        });
    }
    let path = dir.join(STATE_FILE);
    let text = read_bounded(&path).map_err(|error| SnapshotError::NotFound {
        dir: dir.to_path_buf(),
        reason: format!("cannot read {STATE_FILE}: {error}"),
    })?;
    let bad = |reason: String| SnapshotError::BadState {
        path: path.clone(),
        reason,
    };
    let Some(text) = text else {
        return Err(bad(format!(
            "it is larger than {} MiB, which no snapshot's state is",
            MAX_STATE_BYTES >> 20
        )));
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|error| bad(error.to_string()))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(bad(format!("it does not say \"format\": \"{FORMAT}\"")));
    }
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(version) if version == u64::from(VERSION) => {}
        Some(found) => return Err(SnapshotError::OtherVersion { path, found }),
        None => return Err(bad("it has no version number".into())),
    }
    // Parsed again from the text, not the value: an error then says where in the file it is.
    let snapshot: Snapshot = serde_json::from_str(&text).map_err(|error| bad(error.to_string()))?;
    let here = Host::this_one();
    if snapshot.host != here {
        return Err(SnapshotError::OtherHost {
            saved: snapshot.host.describe(),
            here: here.describe(),
        });
    }
    if snapshot.input.len() > INPUT_BUFFER {
        return Err(bad(format!(
            "{} bytes of input, more than the {INPUT_BUFFER} a guest's input holds",
            snapshot.input.len()
        )));
    }
    if snapshot.vcpus.len() != 1 {
        return Err(bad(format!(
            "it has {} vCPUs, and this version restores one",
            snapshot.vcpus.len()
        )));
    }
    Ok(snapshot)
}
