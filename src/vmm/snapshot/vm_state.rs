//! The VM's own state, outside every vCPU: the interrupt controllers KVM emulates in the kernel
//! (the two 8259 PICs and the IOAPIC), the 8254 PIT, and the clock a kvm-clock guest reads.
//! Only a VM with the in-kernel irqchip has them (builder.rs).

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, kvm_clock_data, kvm_irqchip,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use super::SnapshotError;
use super::hex;

/// Each part as KVM's own structure, in hex.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmState {
    /// The master 8259 PIC (IRQ 0-7): its mask, the interrupts requested and in service, its
    /// vector base (KVM_GET_IRQCHIP, chip 0).
    pub pic_master: String,
    /// The slave 8259 PIC (IRQ 8-15), chip 1.
    pub pic_slave: String,
    /// The IOAPIC: its 24 redirection entries and the lines' levels, chip 2.
    pub ioapic: String,
    /// The PIT's three channels: counts, modes, latches, gate (KVM_GET_PIT2).
    pub pit: String,
    /// The kvm-clock's nanoseconds (KVM_GET_CLOCK).
    pub clock: String,
}

fn call(name: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SnapshotError {
    move |source| SnapshotError::Ioctl { call: name, source }
}

fn read_chip(vm: &VmFd, chip_id: u32) -> Result<String, SnapshotError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip).map_err(call("KVM_GET_IRQCHIP"))?;
    Ok(hex::of(&chip))
}

fn write_chip(vm: &VmFd, chip_id: u32, text: &str, part: &str) -> Result<(), SnapshotError> {
    let chip: kvm_irqchip =
        hex::parse(text).map_err(|e| SnapshotError::Invalid(format!("{part}: {e}")))?;
    if chip.chip_id != chip_id {
        return Err(SnapshotError::Invalid(format!(
            "{part}: chip {} where chip {chip_id} was expected",
            chip.chip_id
        )));
    }
    vm.set_irqchip(&chip).map_err(call("KVM_SET_IRQCHIP"))
}

/// Reads the VM's state. Its vCPUs must be out of KVM_RUN.
pub fn capture(vm: &VmFd) -> Result<VmState, SnapshotError> {
    let mut clock = vm.get_clock().map_err(call("KVM_GET_CLOCK"))?;
    // Only the clock's value goes back (KVM_SET_CLOCK takes no flags but this one's absence).
    clock.flags = 0;
    Ok(VmState {
        pic_master: read_chip(vm, KVM_IRQCHIP_PIC_MASTER)?,
        pic_slave: read_chip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
        ioapic: read_chip(vm, KVM_IRQCHIP_IOAPIC)?,
        pit: hex::of(&vm.get_pit2().map_err(call("KVM_GET_PIT2"))?),
        clock: hex::of(&clock),
    })
}

/// Puts the saved state into a new VM that has its irqchip and PIT already.
pub fn restore(vm: &VmFd, state: &VmState) -> Result<(), SnapshotError> {
    write_chip(vm, KVM_IRQCHIP_PIC_MASTER, &state.pic_master, "pic_master")?;
    write_chip(vm, KVM_IRQCHIP_PIC_SLAVE, &state.pic_slave, "pic_slave")?;
    write_chip(vm, KVM_IRQCHIP_IOAPIC, &state.ioapic, "ioapic")?;
    let pit = hex::parse(&state.pit).map_err(|e| SnapshotError::Invalid(format!("pit: {e}")))?;
    vm.set_pit2(&pit).map_err(call("KVM_SET_PIT2"))?;
    let clock: kvm_clock_data =
        hex::parse(&state.clock).map_err(|e| SnapshotError::Invalid(format!("clock: {e}")))?;
    vm.set_clock(&clock).map_err(call("KVM_SET_CLOCK"))?;
    Ok(())
}
