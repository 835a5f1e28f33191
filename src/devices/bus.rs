//! The port-I/O bus: which device answers which port.
//!
//! The vCPU loop hands every `in`/`out` exit to [`PortBus::read`] / [`PortBus::write`]; the bus
//! finds the device registered for the port. Ports nobody claims behave like an empty ISA bus:
//! reads return all ones, writes are ignored; both are counted (`--stats`, `--verbose`).

use std::collections::BTreeMap;

use crate::arch::CpuMode;

/// What the vCPU should do after a device handled an access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoAction {
    Continue,
    Stop(GuestStop),
}

/// Why a device stopped the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestStop {
    /// The EXIT hypercall, with the guest's status.
    Exit(u8),
    /// A reset request (0xFE to the i8042 command port).
    Reboot,
}

/// The vCPU that made an access, as a device may see it: only the hypercall device needs this
/// (its arguments are in registers and its pointers are guest-virtual).
pub trait GuestCpu {
    fn mode(&self) -> CpuMode;
    /// RBX, RCX, RSI: hypercall arguments 0–2, full 64-bit registers.
    fn hypercall_args(&self) -> [u64; 3];
    /// Writes RAX as an instruction of the current mode would: 16-bit keeps the upper bits,
    /// 32-bit and 64-bit replace the whole register.
    fn set_result(&mut self, value: u64);
    /// Base address of DS (real mode pointers are DS-relative).
    fn data_segment_base(&self) -> u64;
    /// Guest-linear to guest-physical, through the guest's page tables when paging is on;
    /// `None` when the address is not mapped.
    fn translate(&mut self, linear: u64) -> Option<u64>;
}

/// A device on the port-I/O bus.
pub trait PortIoDevice: Send {
    /// A short name for traces and statistics ("uart", "hypercall", ...).
    fn name(&self) -> &'static str;
    /// An `in` from `port`: fill `data` (1, 2 or 4 bytes, or more for `rep ins`).
    fn read(&mut self, port: u16, data: &mut [u8]);
    /// An `out` to `port`.
    fn write(&mut self, port: u16, data: &[u8], cpu: &mut dyn GuestCpu) -> IoAction;
    /// The guest has ended: write out anything buffered.
    fn flush(&mut self) {}
}

struct Mapping {
    /// The port ranges (inclusive) this device answers.
    ranges: Vec<(u16, u16)>,
    device: Box<dyn PortIoDevice>,
}

impl Mapping {
    fn claims(&self, port: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(first, last)| (first..=last).contains(&port))
    }
}

/// Accesses to ports that no device claims.
#[derive(Debug, Default, Clone)]
pub struct UnclaimedPorts {
    pub reads: BTreeMap<u16, u64>,
    pub writes: BTreeMap<u16, u64>,
}

#[derive(Default)]
pub struct PortBus {
    mappings: Vec<Mapping>,
    unclaimed: UnclaimedPorts,
}

impl PortBus {
    pub fn new() -> PortBus {
        PortBus::default()
    }

    /// Gives the inclusive port ranges `ranges` to `device`. Ranges must not overlap another
    /// device's (that would be a programming error).
    pub fn register(&mut self, ranges: &[(u16, u16)], device: Box<dyn PortIoDevice>) {
        for &(first, last) in ranges {
            assert!(
                (first..=last).all(|port| self.find_ref(port).is_none()),
                "port range {first:#x}-{last:#x} overlaps another device"
            );
        }
        self.mappings.push(Mapping {
            ranges: ranges.to_vec(),
            device,
        });
    }

    fn find(&mut self, port: u16) -> Option<&mut Mapping> {
        self.mappings.iter_mut().find(|m| m.claims(port))
    }

    fn find_ref(&self, port: u16) -> Option<&Mapping> {
        self.mappings.iter().find(|m| m.claims(port))
    }

    /// The name of the device at `port`, or "unclaimed".
    pub fn device_name(&self, port: u16) -> &'static str {
        self.find_ref(port).map_or("unclaimed", |m| m.device.name())
    }

    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        match self.find(port) {
            Some(mapping) => mapping.device.read(port, data),
            None => {
                *self.unclaimed.reads.entry(port).or_default() += 1;
                data.fill(0xff);
            }
        }
    }

    pub fn write(&mut self, port: u16, data: &[u8], cpu: &mut dyn GuestCpu) -> IoAction {
        match self.find(port) {
            Some(mapping) => mapping.device.write(port, data, cpu),
            None => {
                *self.unclaimed.writes.entry(port).or_default() += 1;
                IoAction::Continue
            }
        }
    }

    pub fn unclaimed(&self) -> &UnclaimedPorts {
        &self.unclaimed
    }

    /// Lets every device write out what it buffered.
    pub fn flush(&mut self) {
        for mapping in &mut self.mappings {
            mapping.device.flush();
        }
    }
}
