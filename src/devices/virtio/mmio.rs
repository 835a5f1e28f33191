//! The virtio MMIO transport, version 2 (virtio 1.2 §4.2.2): one page of 32-bit registers per
//! device. Through it the driver
//!
//! 1. resets the device (Status = 0) and says it has seen it (ACKNOWLEDGE, DRIVER);
//! 2. reads the device's feature bits (DeviceFeaturesSel picks the 32-bit half) and writes the
//!    ones it accepts; FEATURES_OK then sticks only if they are a subset and include VERSION_1;
//! 3. for each queue: selects it (QueueSel), reads its largest size (QueueNumMax), writes its
//!    size and the guest-physical addresses of its three rings, and sets QueueReady;
//! 4. sets DRIVER_OK. From then on a write of the queue's index to QueueNotify means "there are
//!    new requests". mini-kvm registers that register as an ioeventfd per queue (vmm/
//!    device_manager.rs), so the write wakes the VM's event loop, which calls
//!    [`MmioTransport::notify`], instead of stopping the vCPU;
//! 5. on an interrupt, reads InterruptStatus (bit 0: the used ring moved; bit 1: the
//!    configuration changed) and writes the bits it saw to InterruptACK.
//!
//! A guest that breaks the protocol (rings outside RAM, a queue size that is not a power of two)
//! gets its device marked DEVICE_NEEDS_RESET; the VMM never panics or touches memory outside the
//! guest's RAM.

use std::sync::atomic::Ordering;

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_mmio::*;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{DEVICE_ID_EMPTY, FEATURE_VERSION_1, TurnBudget, VirtioDevice};
use crate::arch::x86::acpi::AcpiId;
use crate::devices::{BusDevice, IoAction, IrqLine};

/// "virt", little-endian: the first register of every transport.
pub const MAGIC: u32 = 0x7472_6976;
/// The modern (virtio 1.x) MMIO transport; 1 was the legacy one.
pub const VERSION: u32 = 2;
/// The vendor ID the transport reports: "MKVM".
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"MKVM");
/// Each transport's window (one page; registers up to 0xff, configuration from 0x100).
pub const WINDOW_SIZE: u64 = 0x1000;
/// The ACPI hardware ID Linux's virtio_mmio driver matches (drivers/virtio/virtio_mmio.c).
const ACPI_HID: &str = "LNRO0005";
/// The DSDT name of slot i: VR00, VR01, ...
const ACPI_NAMES: [&str; super::SLOTS] = [
    "VR00", "VR01", "VR02", "VR03", "VR04", "VR05", "VR06", "VR07",
];

/// How many requests one notification handles before the event loop turns to other work
/// (the rest are taken on the next turn: [`Notified::MorePending`]).
const REQUESTS_PER_TURN: usize = 256;
/// How many bytes of data one notification moves before the event loop turns to other work.
/// A request is done whole, so a turn moves less than this plus one request (virtio-blk's
/// bound, 1 MiB): a few milliseconds of copying. The transport's lock, which a vCPU touching
/// the device's registers waits for, is held for one turn, no longer.
const BYTES_PER_TURN: u64 = 4 << 20;

/// What [`MmioTransport::notify`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notified {
    /// All the requests there were are done (or the queue is not usable).
    Done,
    /// It stopped with requests left on the ring, its turn's budget spent
    /// ([`REQUESTS_PER_TURN`], [`BYTES_PER_TURN`]): call again, after the event loop's other work.
    MorePending,
}

/// A device and its transport registers.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    slot: usize,
    memory: GuestMemoryMmap,
    irq: IrqLine,
    queues: Vec<Queue>,
    status: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    queue_select: u32,
    interrupt_status: u32,
}

impl MmioTransport {
    pub fn new(
        device: Box<dyn VirtioDevice>,
        slot: usize,
        memory: GuestMemoryMmap,
        irq: IrqLine,
    ) -> MmioTransport {
        let queues = device
            .queue_sizes()
            .iter()
            // Sizes are powers of two up to 32768, which Queue::new accepts.
            .map(|&size| Queue::new(size).expect("a valid queue size"))
            .collect();
        MmioTransport {
            device,
            slot,
            memory,
            irq,
            queues,
            status: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            queue_select: 0,
            interrupt_status: 0,
        }
    }

    /// How many queues the device has (one ioeventfd each).
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// The device's host descriptor and the queue it feeds (VirtioDevice::input_source).
    pub fn input_source(&self) -> Option<(std::os::fd::RawFd, usize)> {
        self.device.input_source()
    }

    /// The driver wrote `index` to QueueNotify: do a turn's worth of the queue's requests and,
    /// if any finished, interrupt the driver.
    pub fn notify(&mut self, index: usize) -> Notified {
        if self.status & VIRTIO_CONFIG_S_DRIVER_OK == 0 || self.needs_reset() {
            return Notified::Done;
        }
        let Some(queue) = self.queues.get_mut(index) else {
            return Notified::Done;
        };
        if !queue.ready() {
            return Notified::Done;
        }
        if !queue.is_valid(&self.memory) {
            self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
            return Notified::Done;
        }
        let mut budget = TurnBudget::new(REQUESTS_PER_TURN, BYTES_PER_TURN);
        let done = self
            .device
            .process_queue(index, queue, &self.memory, &mut budget);
        match done {
            Ok(count) => {
                if count > 0 {
                    self.interrupt_status |= VIRTIO_MMIO_INT_VRING;
                    self.irq.raise();
                }
                // A spent budget with nothing left on the ring needs no other turn.
                let left = queue
                    .avail_idx(&self.memory, Ordering::Acquire)
                    .is_ok_and(|available| available.0 != queue.next_avail());
                if budget.is_spent() && left {
                    Notified::MorePending
                } else {
                    Notified::Done
                }
            }
            // The used ring could not be written: the driver gave bad addresses.
            Err(_) => {
                self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
                Notified::Done
            }
        }
    }

    fn needs_reset(&self) -> bool {
        self.status & (VIRTIO_CONFIG_S_NEEDS_RESET | VIRTIO_CONFIG_S_FAILED) != 0
    }

    fn reset(&mut self) {
        for queue in &mut self.queues {
            queue.reset();
        }
        self.status = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        self.interrupt_status = 0;
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    fn register(&self, offset: u32) -> u32 {
        let queue = self.queues.get(self.queue_select as usize);
        match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            VIRTIO_MMIO_VERSION => VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_id(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_select {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            VIRTIO_MMIO_QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt_status,
            VIRTIO_MMIO_STATUS => self.status,
            // The configuration never changes while the guest runs.
            VIRTIO_MMIO_CONFIG_GENERATION => 0,
            _ => 0,
        }
    }

    fn set_register(&mut self, offset: u32, value: u32) {
        // Queue registers may change only while the queue is not in use.
        let queue_idle = self.selected_queue().is_some_and(|q| !q.ready());
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_select = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_select = value,
            VIRTIO_MMIO_DRIVER_FEATURES if self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 => {
                match self.driver_features_select {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xffff_ffff) | u64::from(value)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                    }
                    _ => {}
                }
            }
            VIRTIO_MMIO_QUEUE_SEL => self.queue_select = value,
            VIRTIO_MMIO_QUEUE_NUM if queue_idle => {
                // An invalid size (zero, too large, not a power of two, more than 16 bits) is
                // left as it was; Queue::is_valid then refuses the queue when it is used.
                if let (Some(queue), Ok(size)) = (self.selected_queue(), u16::try_from(value)) {
                    queue.set_size(size);
                }
            }
            VIRTIO_MMIO_QUEUE_READY => {
                if let Some(queue) = self.selected_queue() {
                    queue.set_ready(value == 1);
                }
            }
            VIRTIO_MMIO_QUEUE_DESC_LOW if queue_idle => self.with_queue(|q| {
                q.set_desc_table_address(Some(value), None);
            }),
            VIRTIO_MMIO_QUEUE_DESC_HIGH if queue_idle => self.with_queue(|q| {
                q.set_desc_table_address(None, Some(value));
            }),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW if queue_idle => self.with_queue(|q| {
                q.set_avail_ring_address(Some(value), None);
            }),
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH if queue_idle => self.with_queue(|q| {
                q.set_avail_ring_address(None, Some(value));
            }),
            VIRTIO_MMIO_QUEUE_USED_LOW if queue_idle => self.with_queue(|q| {
                q.set_used_ring_address(Some(value), None);
            }),
            VIRTIO_MMIO_QUEUE_USED_HIGH if queue_idle => self.with_queue(|q| {
                q.set_used_ring_address(None, Some(value));
            }),
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt_status &= !value,
            VIRTIO_MMIO_STATUS => self.set_status(value),
            // QueueNotify arrives through the ioeventfd; a write the ioeventfd does not match
            // (an index the device does not have) is ignored, as are read-only registers.
            _ => {}
        }
    }

    fn with_queue(&mut self, change: impl FnOnce(&mut Queue)) {
        if let Some(queue) = self.selected_queue() {
            change(queue);
        }
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let newly = value & !self.status;
        if newly & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            let offered = self.device.features();
            let acceptable = self.driver_features & !offered == 0
                && self.driver_features & FEATURE_VERSION_1 != 0;
            if !acceptable {
                // FEATURES_OK does not stick: the driver reads Status back and gives up.
                self.status |= value & !VIRTIO_CONFIG_S_FEATURES_OK;
                return;
            }
        }
        self.status |= value;
    }
}

impl BusDevice for MmioTransport {
    fn name(&self) -> &'static str {
        self.device.name()
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            self.device
                .read_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        }
        // The registers are 32 bits wide and read whole (§4.2.2.2).
        match <&mut [u8; 4]>::try_from(&mut *data) {
            Ok(word) if offset.is_multiple_of(4) => {
                *word = self.register(offset as u32).to_le_bytes()
            }
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> IoAction {
        if let Ok(word) = <[u8; 4]>::try_from(data)
            && offset.is_multiple_of(4)
            && offset < u64::from(VIRTIO_MMIO_CONFIG)
        {
            self.set_register(offset as u32, u32::from_le_bytes(word));
        }
        // Configuration writes: no device here has a writable configuration.
        IoAction::Continue
    }

    fn acpi_id(&self) -> Option<AcpiId> {
        Some(AcpiId {
            name: ACPI_NAMES[self.slot],
            hid: ACPI_HID,
        })
    }
}

/// A slot without a device: the transport's identification registers with device ID 0, which
/// tells a driver to skip it, and nothing else.
pub struct EmptySlot;

impl BusDevice for EmptySlot {
    fn name(&self) -> &'static str {
        "virtio-empty"
    }

    /// Nothing is kept: the identification registers are constants.
    fn save_state(&self) -> crate::devices::DeviceState {
        crate::devices::DeviceState::Stateless
    }

    fn restore_state(&mut self, _state: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            0x000 => MAGIC,
            0x004 => VERSION,
            0x008 => DEVICE_ID_EMPTY,
            0x00c => VENDOR_ID,
            _ => 0,
        };
        match <&mut [u8; 4]>::try_from(&mut *data) {
            Ok(word) => *word = value.to_le_bytes(),
            Err(_) => data.fill(0),
        }
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) -> IoAction {
        IoAction::Continue
    }
}
