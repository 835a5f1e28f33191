//! The ACPI power device: the three registers a hardware-reduced ACPI platform gives its
//! kernel for ending a run, at ports 0x600-0x602 (the FADT points at them: arch/x86/acpi.rs).
//!
//! ```text
//! 0x600  sleep control: the kernel writes SLP_EN (bit 5) | SLP_TYP << 2; SLP_TYP 5 is the
//!        DSDT's \_S5_ ("soft off"): `poweroff` in the guest ends the run with status 0
//! 0x601  sleep status: the kernel clears WAK_STS before sleeping; reads 0
//! 0x602  reset: writing 1 (the FADT's reset value) resets the machine: `reboot` ends the run
//! ```
//!
//! QEMU's PC machines use a full ACPI PM block instead (PM1a at 0x600 on q35); Firecracker and
//! cloud-hypervisor use registers like these.

use crate::arch::x86::acpi::{PowerPorts, SLEEP_TYPE_SOFT_OFF};
use crate::devices::bus::{BusDevice, BusRange, GuestStop, IoAction};

pub const ACPI_PM_PORTS: BusRange = BusRange::new(0x600, 3);
const SLEEP_CONTROL: u64 = 0;
const SLEEP_STATUS: u64 = 1;
const RESET: u64 = 2;
/// What the kernel writes to the reset register to reset.
const RESET_VALUE: u8 = 1;
/// Sleep control: "go to sleep now", and the sleep type field.
const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111;

/// The ports as the FADT gives them.
pub const POWER_PORTS: PowerPorts = PowerPorts {
    sleep_control: ACPI_PM_PORTS.base as u16 + SLEEP_CONTROL as u16,
    sleep_status: ACPI_PM_PORTS.base as u16 + SLEEP_STATUS as u16,
    reset: ACPI_PM_PORTS.base as u16 + RESET as u16,
    reset_value: RESET_VALUE,
};

#[derive(Default)]
pub struct AcpiPm;

impl BusDevice for AcpiPm {
    fn name(&self) -> &'static str {
        "acpi-pm"
    }

    /// Nothing is kept between accesses.
    fn save_state(&self) -> crate::devices::DeviceState {
        crate::devices::DeviceState::Stateless
    }

    fn restore_state(&mut self, _state: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }

    /// No wake events, no sleep in progress: everything reads 0.
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> IoAction {
        let value = data.first().copied().unwrap_or(0);
        match offset {
            SLEEP_CONTROL
                if value & SLP_EN != 0
                    && (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK == SLEEP_TYPE_SOFT_OFF =>
            {
                IoAction::Stop(GuestStop::PowerOff)
            }
            RESET if value == RESET_VALUE => IoAction::Stop(GuestStop::Reboot),
            // Other sleep states (S1-S4) are not offered (the DSDT names only \_S5_); writes
            // that do not sleep or reset change nothing.
            _ => IoAction::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_off_and_reset_stop_the_guest() {
        let mut pm = AcpiPm;
        // What Linux's acpi_hw_extended_sleep() writes for S5: SLP_TYP 5, SLP_EN.
        assert_eq!(
            pm.write(SLEEP_CONTROL, &[(5 << 2) | (1 << 5)]),
            IoAction::Stop(GuestStop::PowerOff)
        );
        assert_eq!(pm.write(RESET, &[1]), IoAction::Stop(GuestStop::Reboot));
    }

    #[test]
    fn other_writes_change_nothing() {
        let mut pm = AcpiPm;
        // The sleep type alone, without SLP_EN; another sleep type; clearing WAK_STS; a reset
        // register write of another value.
        for (offset, value) in [
            (SLEEP_CONTROL, 5 << 2),
            (SLEEP_CONTROL, (3 << 2) | (1 << 5)),
        ]
        .into_iter()
        .chain([(SLEEP_STATUS, 0x80), (RESET, 0)])
        {
            assert_eq!(
                pm.write(offset, &[value]),
                IoAction::Continue,
                "{offset} {value}"
            );
        }
        let mut data = [0xff];
        pm.read(SLEEP_STATUS, &mut data);
        assert_eq!(data, [0]);
    }
}
