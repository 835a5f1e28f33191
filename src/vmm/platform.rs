//! The PC every guest is: the devices at their ports (UART, debug console, i8042, debug exit,
//! ACPI power registers, fw_cfg, the hypercall doorbell), the display adapter and its memory,
//! and the memory map fw_cfg hands out. The builder (builder.rs) has them attached through the
//! device manager; the virtio devices are virtio.rs's.

use std::sync::Arc;

use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::device_manager::DeviceManager;
use super::memory::{
    LoggedSlot, MemoryError, MemorySlots, range_is_ram, register_logged_region,
    register_memory_slots_logging,
};
use super::vm::{VmError, ioctl};
use crate::arch::x86::layout;
use crate::console::{GuestInput, GuestIo};
use crate::devices::acpi_pm::{ACPI_PM_PORTS, AcpiPm};
use crate::devices::display::vbe::{BochsVbe, DISPI_PORTS, SharedMode};
use crate::devices::display::vga_text::{CRTC_PORTS, CrtController, Cursor};
use crate::devices::display::{Display, DisplayParts};
use crate::devices::fw_cfg::{FW_CFG_PORTS, FwCfg, MachineFacts};
use crate::devices::hypercall::{HYPERCALL_PORT, HypercallDoorbell};
use crate::devices::legacy::debug_exit::{DEBUG_EXIT_PORTS, DebugExit};
use crate::devices::legacy::debugcon::{DEBUGCON_PORT, DebugConsole};
use crate::devices::legacy::i8042::{self, I8042, KEYBOARD_IRQ};
use crate::devices::legacy::serial::{COM1_IRQ, COM1_PORTS, Uart};
use crate::devices::{BusRange, bus};
use crate::loader::multiboot::VideoMode;
use crate::loader::{self, BootProtocol};

/// The memory map as (address, length, E820 type), for the "etc/e820" fw_cfg file: the one the
/// kernel was given (Linux's leaves out the legacy hole).
pub(super) fn e820_map(memory: &GuestMemoryMmap, protocol: BootProtocol) -> Vec<(u64, u64, u32)> {
    let ram_size = loader::ram_size(memory);
    let map = if protocol.is_linux() {
        loader::linux::linux_memory_map(ram_size)
    } else {
        layout::memory_map(ram_size)
    };
    map.into_iter()
        .map(|(start, len, kind)| (start, len, kind.e820_type()))
        .collect()
}

/// The devices every guest has, at the ports of a PC. For a Linux kernel, stdin is
/// the UART's alone: the keyboard gets no input (a kernel probes it at boot, and it would
/// otherwise take typed bytes as key presses for a console nobody looks at), and the terminal
/// goes to raw mode at once, as the console is interactive from the start.
pub(super) fn attach_devices(
    devices: &mut DeviceManager,
    io: &GuestIo,
    facts: &MachineFacts,
    linux: bool,
) -> Result<(), VmError> {
    let com1 = devices.legacy_irq(COM1_IRQ, "uart")?;
    let uart = Uart::new(io.output.clone(), io.input.clone(), com1);
    devices.attach_ports(bus::shared(uart), &[(COM1_PORTS, 0)], Some(COM1_IRQ))?;

    let debugcon = DebugConsole::new(io.output.clone());
    devices.attach_ports(bus::shared(debugcon), &[(DEBUGCON_PORT, 0)], None)?;

    // 0x61, between the i8042's two ports, is the PC speaker gate: left unclaimed (with the
    // irqchip, KVM's PIT answers it in the kernel).
    let keyboard_irq = devices.legacy_irq(KEYBOARD_IRQ, "i8042")?;
    let keyboard_input = if linux {
        io.input.keyboard_claimed();
        GuestInput::none()
    } else {
        io.input.clone()
    };
    let keyboard = I8042::new(keyboard_input, keyboard_irq);
    devices.attach_ports(
        bus::shared(keyboard),
        &[
            (i8042::I8042_DATA_PORT, i8042::DATA),
            (i8042::I8042_COMMAND_PORT, i8042::COMMAND),
        ],
        Some(KEYBOARD_IRQ),
    )?;

    devices.attach_ports(bus::shared(DebugExit), &[(DEBUG_EXIT_PORTS, 0)], None)?;
    // The power-off and reset registers the ACPI tables point a kernel at.
    devices.attach_ports(bus::shared(AcpiPm), &[(ACPI_PM_PORTS, 0)], None)?;
    // QEMU's firmware configuration: what guests written for QEMU ask the machine.
    let fw_cfg = FwCfg::new(facts);
    devices.attach_ports(bus::shared(fw_cfg), &[(FW_CFG_PORTS, 0)], None)?;
    let doorbell = BusRange::new(u64::from(HYPERCALL_PORT), 1);
    devices.attach_ports(bus::shared(HypercallDoorbell), &[(doorbell, 0)], None)?;
    Ok(())
}

/// The display's memory: the text window's logged slot, the framebuffer and its logged slot.
pub(super) struct DisplayMemory {
    text_log: LoggedSlot,
    framebuffer: GuestMemoryMmap,
    framebuffer_log: LoggedSlot,
}

/// Gives RAM to KVM with the VGA text window in a logged slot of its own, then the framebuffer
/// (16 MiB at `FRAMEBUFFER_ADDRESS`, in the MMIO hole, mapped with `MAP_NORESERVE` like RAM).
pub(super) fn register_display_memory(
    vm_fd: &Arc<VmFd>,
    memory: &GuestMemoryMmap,
) -> Result<DisplayMemory, VmError> {
    let window = (layout::VGA_TEXT_WINDOW, layout::VGA_TEXT_WINDOW_SIZE);
    if !range_is_ram(memory, window.0, window.1) {
        return Err(VmError::DisplayNeedsRam {
            ram: loader::ram_size(memory),
        });
    }
    let mut slots = MemorySlots::default();
    let text_log = register_memory_slots_logging(vm_fd, memory, window, &mut slots)
        .map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
    let framebuffer = GuestMemoryMmap::from_ranges(&[(
        GuestAddress(layout::FRAMEBUFFER_ADDRESS),
        layout::FRAMEBUFFER_SIZE as usize,
    )])
    .map_err(|source| MemoryError::Map {
        size: layout::FRAMEBUFFER_SIZE,
        source,
    })?;
    let framebuffer_log = register_logged_region(vm_fd, &framebuffer, &mut slots)
        .map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
    Ok(DisplayMemory {
        text_log,
        framebuffer,
        framebuffer_log,
    })
}

/// The display adapter's two devices, the CRT controller (the text cursor) and the Bochs VBE
/// registers; and the mode a multiboot kernel asked for, set before it starts.
pub(super) fn attach_display(
    devices: &mut DeviceManager,
    memory: &GuestMemoryMmap,
    display_memory: DisplayMemory,
    video: Option<VideoMode>,
) -> Result<Display, VmError> {
    let cursor = Arc::new(Cursor::default());
    let crtc = CrtController::new(Arc::clone(&cursor));
    devices.attach_ports(bus::shared(crtc), &[(CRTC_PORTS, 0)], None)?;
    let mode = SharedMode::default();
    let mut vbe = BochsVbe::new(display_memory.framebuffer.clone(), Arc::clone(&mode));
    if let Some(video) = video {
        vbe.set_mode(video.width, video.height, video.bits_per_pixel);
    }
    devices.attach_ports(bus::shared(vbe), &[(DISPI_PORTS, 0)], None)?;
    Ok(Display::new(DisplayParts {
        ram: memory.clone(),
        cursor,
        framebuffer: display_memory.framebuffer,
        mode,
        text_log: Box::new(display_memory.text_log),
        framebuffer_log: Box::new(display_memory.framebuffer_log),
    }))
}
