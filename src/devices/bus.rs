//! One bus type for both of the guest's I/O address spaces: port I/O (`in`/`out`) and MMIO
//! (loads and stores to guest-physical addresses that are not RAM).
//!
//! A device is registered for a range of addresses and sees only offsets within it, so the same
//! UART model would work at any base. Registration happens while the machine is built; after
//! that the bus never changes, and the vCPU threads share it (`Arc<Bus>`): each device sits
//! behind its own mutex, so two vCPUs touching two devices never wait for each other.
//!
//! Addresses nobody claims behave like an empty ISA bus: reads return all ones, writes are
//! ignored. The bus only says so ([`Access::Unclaimed`]); the vCPU counts them and decides
//! (an unclaimed MMIO access is a guest fault, an unclaimed port is not).

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;

use super::state::DeviceState;
use crate::arch::x86::acpi::AcpiId;

/// What the vCPU should do after a device handled a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoAction {
    Continue,
    /// The device stops the guest.
    Stop(GuestStop),
    /// The guest rang the hypercall doorbell with this call number: the vCPU reads the
    /// arguments from its registers and runs the call (devices/hypercall).
    Hypercall(u8),
}

/// Why a device stopped the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestStop {
    /// The EXIT hypercall (or isa-debug-exit), with the guest's status.
    Exit(u8),
    /// A reset request (0xFE to the i8042 command port, or the ACPI reset register).
    Reboot,
    /// ACPI power-off: the guest entered the soft-off sleep state (S5).
    PowerOff,
}

/// A device model on a bus. It sees offsets within its range, never the vCPU or the VM.
pub trait BusDevice: Send {
    /// A short name for traces and statistics ("uart", "hypercall", ...).
    fn name(&self) -> &'static str;
    /// A read at `offset`: fill `data` (1, 2, 4 or 8 bytes, or more for `rep ins`).
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// A write at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> IoAction;
    /// Offsets whose writes KVM may queue on its coalesced-I/O ring instead of exiting for each
    /// (output-only registers whose writes have no effect the guest could read back at once).
    fn coalesced_offsets(&self) -> &'static [u64] {
        &[]
    }
    /// The guest has ended: write out anything buffered.
    fn flush(&mut self) {}
    /// How the ACPI tables name this device, if they list it (arch/x86/acpi.rs).
    fn acpi_id(&self) -> Option<AcpiId> {
        None
    }
    /// The device's state for a snapshot (state.rs). A device that does not say cannot be
    /// saved: a snapshot of a guest that has it is refused, rather than restored wrong.
    fn save_state(&self) -> DeviceState {
        DeviceState::NotSaved
    }
    /// Puts back the state [`save_state`](Self::save_state) gave, in a device just built the
    /// same way; the error says what in the value was wrong.
    fn restore_state(&mut self, _state: &serde_json::Value) -> Result<(), String> {
        Err(format!("the {} device cannot be restored", self.name()))
    }
}

/// A device shared between the bus and whoever else needs it (the event loop, for input).
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Wraps a device for the bus.
pub fn shared(device: impl BusDevice + 'static) -> SharedDevice {
    Arc::new(Mutex::new(device))
}

/// Locks a device even if another thread panicked while holding it: the bus stays usable.
fn lock(device: &SharedDevice) -> MutexGuard<'_, dyn BusDevice + 'static> {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Which of the guest's two I/O address spaces a bus serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressSpace {
    Pio,
    Mmio,
}

impl AddressSpace {
    /// How an address of this space is written in messages: "port 0x3f8", "MMIO 0xd0000000".
    pub fn describe(self, address: u64) -> String {
        match self {
            AddressSpace::Pio => format!("port {address:#x}"),
            AddressSpace::Mmio => format!("MMIO {address:#x}"),
        }
    }
}

/// A range of addresses: `len` bytes (or ports) from `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusRange {
    pub base: u64,
    pub len: u64,
}

impl BusRange {
    pub const fn new(base: u64, len: u64) -> BusRange {
        BusRange { base, len }
    }

    /// The last address in the range.
    pub fn last(&self) -> u64 {
        self.base + (self.len - 1)
    }

    fn contains(&self, address: u64) -> bool {
        address >= self.base && address - self.base < self.len
    }

    fn overlaps(&self, other: &BusRange) -> bool {
        self.base <= other.last() && other.base <= self.last()
    }
}

impl fmt::Display for BusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}-{:#x}", self.base, self.last())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BusError {
    #[error("cannot attach {device} at {space:?} {range}: it overlaps {other} at {other_range}")]
    Overlap {
        device: &'static str,
        space: AddressSpace,
        range: BusRange,
        other: &'static str,
        other_range: BusRange,
    },
    #[error("cannot attach {device} at {space:?} {base:#x}: an empty or wrapping range")]
    BadRange {
        device: &'static str,
        space: AddressSpace,
        base: u64,
    },
}

struct Mapping {
    range: BusRange,
    /// The device's offset at `range.base`: a device registered in pieces (the i8042 at 0x60 and
    /// 0x64) sees one offset space.
    first_offset: u64,
    name: &'static str,
    device: SharedDevice,
}

/// The answer of a bus to an access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<T> {
    /// A device took it; its name, and what it said.
    Claimed(&'static str, T),
    /// No device answers here.
    Unclaimed,
}

/// One address space's devices, sorted by address.
pub struct Bus {
    space: AddressSpace,
    mappings: Vec<Mapping>,
}

impl Bus {
    pub fn new(space: AddressSpace) -> Bus {
        Bus {
            space,
            mappings: Vec::new(),
        }
    }

    pub fn space(&self) -> AddressSpace {
        self.space
    }

    /// Gives `range` to `device`; it sees offsets from 0 at `range.base`.
    pub fn insert(&mut self, range: BusRange, device: &SharedDevice) -> Result<(), BusError> {
        self.insert_at_offset(range, 0, device)
    }

    /// Gives `range` to `device`, which sees `first_offset` at `range.base`.
    pub fn insert_at_offset(
        &mut self,
        range: BusRange,
        first_offset: u64,
        device: &SharedDevice,
    ) -> Result<(), BusError> {
        let name = lock(device).name();
        if range.len == 0 || range.base.checked_add(range.len - 1).is_none() {
            return Err(BusError::BadRange {
                device: name,
                space: self.space,
                base: range.base,
            });
        }
        if let Some(other) = self.mappings.iter().find(|m| m.range.overlaps(&range)) {
            return Err(BusError::Overlap {
                device: name,
                space: self.space,
                range,
                other: other.name,
                other_range: other.range,
            });
        }
        let at = self.mappings.partition_point(|m| m.range.base < range.base);
        self.mappings.insert(
            at,
            Mapping {
                range,
                first_offset,
                name,
                device: Arc::clone(device),
            },
        );
        Ok(())
    }

    fn find(&self, address: u64) -> Option<&Mapping> {
        let after = self.mappings.partition_point(|m| m.range.base <= address);
        let candidate = self.mappings.get(after.checked_sub(1)?)?;
        candidate.range.contains(address).then_some(candidate)
    }

    /// Each device on the bus once (a device in pieces has several ranges), in address order,
    /// with its name: for a snapshot, which saves and restores them by name.
    pub fn devices(&self) -> Vec<(&'static str, SharedDevice)> {
        let mut devices: Vec<(&'static str, SharedDevice)> = Vec::new();
        for mapping in &self.mappings {
            if !devices
                .iter()
                .any(|(_, device)| Arc::ptr_eq(device, &mapping.device))
            {
                devices.push((mapping.name, Arc::clone(&mapping.device)));
            }
        }
        devices
    }

    /// The name of the device at `address`, or "unclaimed".
    pub fn device_name(&self, address: u64) -> &'static str {
        self.find(address).map_or("unclaimed", |m| m.name)
    }

    /// Whether a device answers at `address`.
    pub fn claims(&self, address: u64) -> bool {
        self.find(address).is_some()
    }

    /// A read: the device fills `data`; unclaimed, it reads as all ones.
    pub fn read(&self, address: u64, data: &mut [u8]) -> Access<()> {
        match self.find(address) {
            Some(m) => {
                let offset = m.first_offset + (address - m.range.base);
                lock(&m.device).read(offset, data);
                Access::Claimed(m.name, ())
            }
            None => {
                data.fill(0xff);
                Access::Unclaimed
            }
        }
    }

    /// A write: what the device wants done next; unclaimed, it is ignored.
    pub fn write(&self, address: u64, data: &[u8]) -> Access<IoAction> {
        match self.find(address) {
            Some(m) => {
                let offset = m.first_offset + (address - m.range.base);
                Access::Claimed(m.name, lock(&m.device).write(offset, data))
            }
            None => Access::Unclaimed,
        }
    }

    /// The absolute addresses whose writes may be coalesced, from each device's offsets.
    pub fn coalesced_addresses(&self) -> Vec<u64> {
        let mut addresses = Vec::new();
        for m in &self.mappings {
            for &offset in lock(&m.device).coalesced_offsets() {
                if offset >= m.first_offset && offset - m.first_offset < m.range.len {
                    addresses.push(m.range.base + (offset - m.first_offset));
                }
            }
        }
        addresses
    }

    /// Lets every device write out what it buffered (each once, however many ranges it has).
    pub fn flush(&self) {
        let mut flushed: Vec<*const ()> = Vec::new();
        for m in &self.mappings {
            let id = Arc::as_ptr(&m.device) as *const ();
            if !flushed.contains(&id) {
                flushed.push(id);
                lock(&m.device).flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the last access; offset 7 stops the guest.
    #[derive(Default)]
    struct Probe {
        last: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn name(&self) -> &'static str {
            "probe"
        }
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> IoAction {
            self.last = Some((offset, data.to_vec()));
            if offset == 7 {
                IoAction::Stop(GuestStop::Exit(7))
            } else {
                IoAction::Continue
            }
        }
        fn coalesced_offsets(&self) -> &'static [u64] {
            &[0, 4]
        }
    }

    #[test]
    fn devices_see_offsets_within_their_range() {
        let mut bus = Bus::new(AddressSpace::Pio);
        let probe = shared(Probe::default());
        bus.insert(BusRange::new(0x3f8, 8), &probe).unwrap();
        let mut data = [0u8; 2];
        assert_eq!(bus.read(0x3fa, &mut data), Access::Claimed("probe", ()));
        assert_eq!(data, [2, 2]);
        assert_eq!(
            bus.write(0x3ff, &[1]),
            Access::Claimed("probe", IoAction::Stop(GuestStop::Exit(7)))
        );
        assert_eq!(bus.device_name(0x3f8), "probe");
        assert_eq!(bus.device_name(0x400), "unclaimed");
    }

    #[test]
    fn unclaimed_reads_are_all_ones() {
        let bus = Bus::new(AddressSpace::Mmio);
        let mut data = [0u8; 4];
        assert_eq!(bus.read(0xd000_0000, &mut data), Access::Unclaimed);
        assert_eq!(data, [0xff; 4]);
        assert_eq!(bus.write(0xd000_0000, &[1]), Access::Unclaimed);
    }

    #[test]
    fn overlapping_ranges_are_an_error_not_a_panic() {
        let mut bus = Bus::new(AddressSpace::Mmio);
        let probe = shared(Probe::default());
        bus.insert(BusRange::new(0x1000, 0x100), &probe).unwrap();
        let error = bus
            .insert(BusRange::new(0x10ff, 1), &probe)
            .expect_err("overlap");
        assert_eq!(
            error.to_string(),
            "cannot attach probe at Mmio 0x10ff-0x10ff: it overlaps probe at 0x1000-0x10ff"
        );
        assert!(bus.insert(BusRange::new(0x1100, 1), &probe).is_ok());
        assert!(bus.insert(BusRange::new(0x0fff, 1), &probe).is_ok());
        assert!(matches!(
            bus.insert(BusRange::new(0x2000, 0), &probe),
            Err(BusError::BadRange { .. })
        ));
        assert!(matches!(
            bus.insert(BusRange::new(u64::MAX, 2), &probe),
            Err(BusError::BadRange { .. })
        ));
    }

    #[test]
    fn a_device_in_pieces_sees_one_offset_space() {
        let mut bus = Bus::new(AddressSpace::Pio);
        let probe = shared(Probe::default());
        bus.insert_at_offset(BusRange::new(0x60, 1), 0, &probe)
            .unwrap();
        bus.insert_at_offset(BusRange::new(0x64, 1), 4, &probe)
            .unwrap();
        let mut data = [0u8; 1];
        bus.read(0x64, &mut data);
        assert_eq!(data, [4]);
        assert_eq!(bus.device_name(0x61), "unclaimed");
        // Offsets 0 and 4 are coalesced: one address in each piece.
        assert_eq!(bus.coalesced_addresses(), vec![0x60, 0x64]);
    }
}
