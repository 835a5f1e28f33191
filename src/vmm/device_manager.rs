//! Attaching devices to a machine: their address ranges on the buses, their interrupt lines,
//! and a description of each for the firmware tables (the MP table today, ACPI later).
//!
//! Legacy PC devices come with the ports and IRQs every PC gives them (COM1 at 0x3f8 on IRQ 4);
//! newer devices get an MMIO window and an IRQ from the allocators here. Either way the manager
//! checks that nothing overlaps, wires the IRQ to KVM's interrupt controller with an irqfd, and
//! remembers what it attached. The coalesced-I/O zones come from the devices themselves
//! ([`BusDevice::coalesced_offsets`]): no port list lives here or in builder.rs.
//!
//! A device that should not stop a vCPU for every doorbell write (a virtio queue notify) asks
//! for an [`DeviceManager::ioeventfd`]: KVM then signals an eventfd instead of exiting, and the
//! device's [`EventHandler`] runs on the VM's event loop (event_loop.rs) when it is signalled.

use std::sync::Arc;

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use thiserror::Error;
use vmm_sys_util::eventfd::EventFd;

use super::event_loop::EventHandler;
use super::exit::Buses;
use crate::arch::x86::acpi::{AcpiDevice, AcpiId};
use crate::arch::x86::layout::{DEVICE_WINDOWS_END, DEVICE_WINDOWS_START};
use crate::devices::{AddressSpace, Bus, BusError, BusRange, IrqLine, SharedDevice};

/// The IOAPIC's input pins: the GSIs a device can be given.
pub const IOAPIC_PINS: u32 = 24;
/// The first GSI handed out to devices without a legacy IRQ (0-4 belong to the timer, the
/// keyboard, the cascade, COM2 and COM1).
const FIRST_FREE_IRQ: u32 = 5;

#[derive(Debug, Error)]
pub enum DeviceError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("IRQ {irq} is already taken by {owner}")]
    IrqTaken { irq: u32, owner: &'static str },
    #[error("no free IRQ is left for {device} (the IOAPIC has {IOAPIC_PINS} pins)")]
    NoFreeIrq { device: &'static str },
    #[error(
        "no virtio slot is left for {device}: a guest has {slots} (each --disk and --net takes one, and --rng one)"
    )]
    NoVirtioSlot { device: &'static str, slots: usize },
    #[error("no room is left in the MMIO hole for {device} ({size:#x} bytes)")]
    NoMmioRoom { device: &'static str, size: u64 },
    #[error("cannot create an eventfd for IRQ {irq}: {source}")]
    EventFd { irq: u32, source: std::io::Error },
    #[error("KVM_IRQFD for IRQ {irq} failed: {source}")]
    Irqfd { irq: u32, source: kvm_ioctls::Error },
    #[error("cannot create an ioeventfd at {address:#x}: {source}")]
    Ioeventfd {
        address: u64,
        source: std::io::Error,
    },
}

/// What the firmware tables say about one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: &'static str,
    pub ports: Vec<BusRange>,
    pub mmio: Vec<BusRange>,
    pub irq: Option<u32>,
    /// How the ACPI tables name it; `None` for devices they leave out.
    pub acpi: Option<AcpiId>,
}

impl DeviceInfo {
    /// The device as the DSDT describes it, if the tables list it.
    pub fn acpi_device(&self) -> Option<AcpiDevice> {
        Some(AcpiDevice {
            id: self.acpi?,
            ports: self
                .ports
                .iter()
                .map(|range| (range.base as u16, range.len as u16))
                .collect(),
            mmio: self
                .mmio
                .iter()
                .map(|range| (range.base, range.len))
                .collect(),
            irq: self.irq,
        })
    }
}

/// Hands out MMIO windows from the device part of the hole, page-aligned, lowest first.
struct WindowAllocator {
    next: u64,
    end: u64,
}

impl WindowAllocator {
    fn allocate(&mut self, size: u64) -> Option<BusRange> {
        const PAGE: u64 = 4096;
        let size = size.max(1).div_ceil(PAGE) * PAGE;
        let base = self.next;
        let end = base.checked_add(size).filter(|&end| end <= self.end)?;
        self.next = end;
        Some(BusRange::new(base, size))
    }
}

/// Which device owns which IOAPIC pin.
struct IrqAllocator {
    owners: [Option<&'static str>; IOAPIC_PINS as usize],
}

impl IrqAllocator {
    fn reserve(&mut self, irq: u32, device: &'static str) -> Result<(), DeviceError> {
        let slot = &mut self.owners[irq as usize];
        match slot {
            Some(owner) => Err(DeviceError::IrqTaken { irq, owner }),
            None => {
                *slot = Some(device);
                Ok(())
            }
        }
    }

    fn allocate(&mut self, device: &'static str) -> Result<u32, DeviceError> {
        let irq = (FIRST_FREE_IRQ..IOAPIC_PINS)
            .find(|&irq| self.owners[irq as usize].is_none())
            .ok_or(DeviceError::NoFreeIrq { device })?;
        self.owners[irq as usize] = Some(device);
        Ok(irq)
    }
}

pub struct DeviceManager {
    vm_fd: Arc<VmFd>,
    /// Without KVM's irqchip (a real-mode guest), interrupt lines go nowhere.
    irqchip: bool,
    pio: Bus,
    mmio: Bus,
    irqs: IrqAllocator,
    windows: WindowAllocator,
    devices: Vec<DeviceInfo>,
    event_handlers: Vec<Box<dyn EventHandler>>,
}

/// What the manager hands over once every device is attached.
pub struct AttachedDevices {
    pub buses: Buses,
    pub devices: Vec<DeviceInfo>,
    /// Run by the VM's event loop when their descriptors are readable.
    pub event_handlers: Vec<Box<dyn EventHandler>>,
}

impl DeviceManager {
    pub fn new(vm_fd: Arc<VmFd>, irqchip: bool) -> DeviceManager {
        DeviceManager {
            vm_fd,
            irqchip,
            pio: Bus::new(AddressSpace::Pio),
            mmio: Bus::new(AddressSpace::Mmio),
            irqs: IrqAllocator {
                owners: [None; IOAPIC_PINS as usize],
            },
            windows: WindowAllocator {
                next: DEVICE_WINDOWS_START,
                end: DEVICE_WINDOWS_END,
            },
            devices: Vec::new(),
            event_handlers: Vec::new(),
        }
    }

    /// Reserves the legacy IRQ `irq` for `device` and returns its line, wired to KVM.
    pub fn legacy_irq(&mut self, irq: u32, device: &'static str) -> Result<IrqLine, DeviceError> {
        self.irqs.reserve(irq, device)?;
        self.connect(irq)
    }

    /// Allocates a free IRQ for `device` and returns it with its line.
    pub fn allocate_irq(&mut self, device: &'static str) -> Result<(u32, IrqLine), DeviceError> {
        let irq = self.irqs.allocate(device)?;
        Ok((irq, self.connect(irq)?))
    }

    /// An irqfd on `irq`: raising the line is a write to an eventfd that KVM watches.
    fn connect(&self, irq: u32) -> Result<IrqLine, DeviceError> {
        if !self.irqchip {
            return Ok(IrqLine::disconnected(irq));
        }
        let event = EventFd::new(libc::EFD_NONBLOCK)
            .map_err(|source| DeviceError::EventFd { irq, source })?;
        self.vm_fd
            .register_irqfd(&event, irq)
            .map_err(|source| DeviceError::Irqfd { irq, source })?;
        Ok(IrqLine::connected(irq, event))
    }

    /// Attaches a port-I/O device at fixed ports. Each piece is a range and the device offset at
    /// its start (most devices have one piece at offset 0).
    pub fn attach_ports(
        &mut self,
        device: SharedDevice,
        pieces: &[(BusRange, u64)],
        irq: Option<u32>,
    ) -> Result<(), DeviceError> {
        for &(range, first_offset) in pieces {
            self.pio.insert_at_offset(range, first_offset, &device)?;
        }
        self.describe(&device, pieces.iter().map(|p| p.0).collect(), vec![], irq);
        Ok(())
    }

    /// Attaches an MMIO device in a window of `size` bytes from the hole; returns the window.
    pub fn attach_mmio(
        &mut self,
        device: SharedDevice,
        size: u64,
        irq: Option<u32>,
    ) -> Result<BusRange, DeviceError> {
        let name = device_name(&device);
        let window = self
            .windows
            .allocate(size)
            .ok_or(DeviceError::NoMmioRoom { device: name, size })?;
        self.mmio.insert(window, &device)?;
        self.describe(&device, vec![], vec![window], irq);
        Ok(window)
    }

    /// Attaches an MMIO device at a fixed `window` (the virtio slots, whose addresses a guest
    /// without ACPI must know).
    pub fn attach_mmio_at(
        &mut self,
        device: SharedDevice,
        window: BusRange,
        irq: Option<u32>,
    ) -> Result<(), DeviceError> {
        self.mmio.insert(window, &device)?;
        self.describe(&device, vec![], vec![window], irq);
        Ok(())
    }

    fn describe(
        &mut self,
        device: &SharedDevice,
        ports: Vec<BusRange>,
        mmio: Vec<BusRange>,
        irq: Option<u32>,
    ) {
        let (name, acpi) = {
            let device = device
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            (device.name(), device.acpi_id())
        };
        self.devices.push(DeviceInfo {
            name,
            ports,
            mmio,
            irq,
            acpi,
        });
    }

    /// What is attached, in the order it was attached.
    pub fn devices(&self) -> &[DeviceInfo] {
        &self.devices
    }

    /// The ports whose writes may wait on KVM's coalesced-I/O ring, as the devices declare.
    pub fn coalesced_ports(&self) -> Vec<u64> {
        self.pio.coalesced_addresses()
    }

    /// An eventfd KVM signals when the guest writes to `address` in `space`, instead of a VM
    /// exit (KVM_IOEVENTFD): the write completes in the kernel and the vCPU runs on. With
    /// `value`, only a 4-byte write of that value signals it (a virtio queue's index); other
    /// writes exit as usual.
    pub fn ioeventfd(
        &self,
        space: AddressSpace,
        address: u64,
        value: Option<u32>,
    ) -> Result<EventFd, DeviceError> {
        let failed = |source| DeviceError::Ioeventfd { address, source };
        let event = EventFd::new(libc::EFD_NONBLOCK).map_err(failed)?;
        let at = match space {
            AddressSpace::Pio => IoEventAddress::Pio(address),
            AddressSpace::Mmio => IoEventAddress::Mmio(address),
        };
        let registered = match value {
            Some(value) => self.vm_fd.register_ioevent(&event, &at, value),
            None => self.vm_fd.register_ioevent(&event, &at, NoDatamatch),
        };
        registered.map_err(|e| failed(std::io::Error::from_raw_os_error(e.errno())))?;
        Ok(event)
    }

    /// Work the VM's event loop does for a device when the handler's descriptor is readable.
    pub fn add_event_handler(&mut self, handler: Box<dyn EventHandler>) {
        self.event_handlers.push(handler);
    }

    /// The finished buses, for the vCPUs to share, and the rest for the VM.
    pub fn finish(self) -> AttachedDevices {
        AttachedDevices {
            buses: Buses {
                pio: self.pio,
                mmio: self.mmio,
            },
            devices: self.devices,
            event_handlers: self.event_handlers,
        }
    }
}

fn device_name(device: &SharedDevice) -> &'static str {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .name()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_to_an_ioeventfd_port_signals_it_without_a_vm_exit() {
        use kvm_bindings::kvm_userspace_memory_region;
        use kvm_ioctls::{Kvm, VcpuExit};
        use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

        let kvm = Kvm::new().expect("this test needs /dev/kvm (docs/testing.md)");
        let vm_fd = Arc::new(kvm.create_vm().unwrap());
        let manager = DeviceManager::new(Arc::clone(&vm_fd), false);
        let doorbell = manager.ioeventfd(AddressSpace::Pio, 0x600, None).unwrap();

        // Real mode at 0000:1000: mov $0x600, %dx; out %al, (%dx); hlt.
        let memory: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x2000)]).unwrap();
        memory
            .write_slice(&[0xba, 0x00, 0x06, 0xee, 0xf4], GuestAddress(0x1000))
            .unwrap();
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: 0x2000,
            userspace_addr: memory.get_host_address(GuestAddress(0)).unwrap() as u64,
        };
        // SAFETY: `memory` outlives the VM, which is dropped at the end of this test first.
        unsafe { vm_fd.set_user_memory_region(region) }.unwrap();
        let mut vcpu = vm_fd.create_vcpu(0).unwrap();
        let mut sregs = vcpu.get_sregs().unwrap();
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        vcpu.set_sregs(&sregs).unwrap();
        let mut regs = vcpu.get_regs().unwrap();
        regs.rip = 0x1000;
        regs.rflags = 0x2;
        vcpu.set_regs(&regs).unwrap();

        // The `out` completes in KVM: the first exit mini-kvm would see is the `hlt`.
        assert!(matches!(vcpu.run().unwrap(), VcpuExit::Hlt));
        assert_eq!(doorbell.read().unwrap(), 1);
        drop(vcpu);
    }

    #[test]
    fn windows_are_page_aligned_and_bounded() {
        let mut windows = WindowAllocator {
            next: 0xd000_0000,
            end: 0xd000_3000,
        };
        assert_eq!(
            windows.allocate(0x200),
            Some(BusRange::new(0xd000_0000, 0x1000))
        );
        assert_eq!(
            windows.allocate(0x1001),
            Some(BusRange::new(0xd000_1000, 0x2000))
        );
        assert_eq!(windows.allocate(1), None);
    }

    #[test]
    fn irqs_are_reserved_once_and_allocated_above_the_legacy_ones() {
        let mut irqs = IrqAllocator {
            owners: [None; IOAPIC_PINS as usize],
        };
        irqs.reserve(4, "uart").unwrap();
        assert_eq!(
            irqs.reserve(4, "other").unwrap_err().to_string(),
            "IRQ 4 is already taken by uart"
        );
        assert_eq!(irqs.allocate("virtio").unwrap(), 5);
        assert_eq!(irqs.allocate("virtio").unwrap(), 6);
        for _ in 7..IOAPIC_PINS {
            irqs.allocate("more").unwrap();
        }
        assert!(matches!(
            irqs.allocate("last"),
            Err(DeviceError::NoFreeIrq { .. })
        ));
    }
}
