//! ACPI tables: how a kernel that boots without a BIOS learns its machine.
//!
//! A PC's firmware leaves these tables in memory for the operating system: which CPUs there are,
//! where the interrupt controllers are, which devices sit at which ports and IRQs, and how to
//! power off and reset. Linux needs them for anything beyond one CPU (Debian's kernels ignore the
//! older MP table: mptable.rs). mini-kvm has no firmware, so it writes them itself, with the
//! rust-vmm `acpi_tables` crate, before the kernel starts:
//!
//! ```text
//! 0xe0000  RSDP "RSD PTR " (where a kernel searches: 0xe0000-0xfffff, 16-byte aligned; the
//!            │               boot protocols also pass its address)
//!            └─> XSDT: the addresses of the other tables
//!                 ├─> FACP (the FADT): "hardware-reduced ACPI" (no PM timer, no SCI, no PM1
//!                 │     blocks: a VM needs none), the sleep control and status registers
//!                 │     (power-off) and the reset register, all I/O ports of
//!                 │     devices/acpi_pm.rs, and the address of
//!                 │     └─> DSDT: AML bytecode the kernel interprets: a Device for each
//!                 │           described device (COM1, the i8042, fw_cfg) with its ports and
//!                 │           IRQ, and \_S5_, the sleep-type value that means "soft off"
//!                 └─> APIC (the MADT): one local APIC per vCPU, the IOAPIC
//! ```
//!
//! The ISA IRQs go to the IOAPIC pins of the same number (no interrupt source overrides), as
//! KVM's default interrupt routing wires them.

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, MADT, ProcessorLocalApic,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{Aml, AmlSink, aml};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::layout::{ACPI_RSDP_ADDRESS, ACPI_TABLES_END, IOAPIC_ADDRESS, LOCAL_APIC_ADDRESS};

/// Who made the tables, as every table header says.
const OEM_ID: [u8; 6] = *b"MINKVM";
const OEM_REVISION: u32 = 1;
/// The DSDT's revision: 2 and up means 64-bit AML integers.
const DSDT_REVISION: u8 = 2;
/// IA-PC boot architecture flags (FADT `iapc_boot_arch`): an 8042 keyboard controller is
/// present (Linux then probes the i8042); there is no VGA to probe.
const IAPC_BOOT_8042: u16 = 1 << 1;
const IAPC_BOOT_NO_VGA: u16 = 1 << 2;
/// The value of \_S5_ in the DSDT: what the kernel writes into the SLP_TYP field of the sleep
/// control register to power off.
pub const SLEEP_TYPE_SOFT_OFF: u8 = 5;
/// The IOAPIC's ID: the first after the CPUs' APIC IDs (as in the MP table).
fn ioapic_id(cpus: usize) -> u8 {
    cpus as u8
}

/// A device as the DSDT names it: a four-character ACPI name ("COM1") and a hardware ID, either
/// an EISA ID ("PNP0501": a 16550 UART) or a vendor string ("QEMU0002": fw_cfg).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcpiId {
    pub name: &'static str,
    pub hid: &'static str,
}

/// One device for the DSDT: its ID, its port ranges (first port, count), its MMIO ranges
/// (address, length) and its IRQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiDevice {
    pub id: AcpiId,
    pub ports: Vec<(u16, u16)>,
    pub mmio: Vec<(u64, u64)>,
    pub irq: Option<u32>,
}

/// The ports of the power device the FADT points at (devices/acpi_pm.rs).
#[derive(Debug, Clone, Copy)]
pub struct PowerPorts {
    pub sleep_control: u16,
    pub sleep_status: u16,
    pub reset: u16,
    pub reset_value: u8,
}

#[derive(Debug, Error)]
pub enum AcpiError {
    #[error("the ACPI tables ({size} bytes) do not fit below {ACPI_TABLES_END:#x}")]
    TooLarge { size: u64 },
    #[error(
        "the ACPI tables need the BIOS area at {ACPI_RSDP_ADDRESS:#x}: give the guest more memory"
    )]
    NoRoom,
    #[error("cannot write the ACPI tables into guest memory: {0}")]
    Write(#[from] vm_memory::GuestMemoryError),
}

/// Writes the tables for a machine of `cpus` CPUs with `devices`; returns the RSDP's address.
pub fn write(
    memory: &GuestMemoryMmap,
    cpus: usize,
    devices: &[AcpiDevice],
    power: PowerPorts,
) -> Result<u64, AcpiError> {
    if !memory.address_in_range(GuestAddress(ACPI_TABLES_END - 1)) {
        return Err(AcpiError::NoRoom);
    }
    // The RSDP comes first, at its fixed address; the other tables follow in the order each
    // needs the address of the one before.
    let mut tables = TablePlacer::new(ACPI_RSDP_ADDRESS + Rsdp::len() as u64);
    let dsdt = tables.place(dsdt(devices));
    let fadt = tables.place(fadt(dsdt, power));
    let madt = tables.place(madt(cpus));
    let mut xsdt = XSDT::new(OEM_ID, *b"MKVMXSDT", OEM_REVISION);
    xsdt.add_entry(fadt);
    xsdt.add_entry(madt);
    let xsdt = tables.place(bytes_of(&xsdt));
    let rsdp = Rsdp::new(OEM_ID, xsdt);

    if tables.next > ACPI_TABLES_END {
        return Err(AcpiError::TooLarge {
            size: tables.next - ACPI_RSDP_ADDRESS,
        });
    }
    memory.write_slice(&bytes_of(&rsdp), GuestAddress(ACPI_RSDP_ADDRESS))?;
    for (address, bytes) in &tables.placed {
        memory.write_slice(bytes, GuestAddress(*address))?;
    }
    Ok(ACPI_RSDP_ADDRESS)
}

/// Lays tables out one after another, each at a 16-byte boundary.
struct TablePlacer {
    next: u64,
    placed: Vec<(u64, Vec<u8>)>,
}

impl TablePlacer {
    fn new(start: u64) -> TablePlacer {
        TablePlacer {
            next: start.next_multiple_of(16),
            placed: Vec::new(),
        }
    }

    /// Where `bytes` go.
    fn place(&mut self, bytes: Vec<u8>) -> u64 {
        let address = self.next;
        self.next = (address + bytes.len() as u64).next_multiple_of(16);
        self.placed.push((address, bytes));
        address
    }
}

fn bytes_of(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// The DSDT: under \_SB_ (the system bus), a Device per described device; then \_S5_.
fn dsdt(devices: &[AcpiDevice]) -> Vec<u8> {
    let mut uids = std::collections::HashMap::<&str, u32>::new();
    let device_aml: Vec<Encoded> = devices
        .iter()
        .map(|device| {
            // _UID tells apart devices with the same _HID (COM1, COM2, ...).
            let uid = uids.entry(device.id.hid).or_default();
            let aml = device_aml(device, *uid);
            *uid += 1;
            Encoded(aml)
        })
        .collect();
    let children: Vec<&dyn Aml> = device_aml.iter().map(|aml| aml as &dyn Aml).collect();
    let mut body = Vec::new();
    aml::Scope::new("\\_SB_".into(), children).to_aml_bytes(&mut body);
    // \_S5_: Package { SLP_TYPa, SLP_TYPb, reserved, reserved }.
    let soft_off = [SLEEP_TYPE_SOFT_OFF, SLEEP_TYPE_SOFT_OFF, 0, 0];
    aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(soft_off.iter().map(|value| value as &dyn Aml).collect()),
    )
    .to_aml_bytes(&mut body);

    let mut dsdt = Sdt::new(
        *b"DSDT",
        36,
        DSDT_REVISION,
        OEM_ID,
        *b"MKVMDSDT",
        OEM_REVISION,
    );
    dsdt.append_slice(&body);
    dsdt.as_slice().to_vec()
}

/// Already-encoded AML (a device's bytes, to go inside the \_SB_ scope).
struct Encoded(Vec<u8>);

impl Aml for Encoded {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

/// `Device (NAME) { Name (_HID, ...), Name (_UID, n), Name (_CRS, ResourceTemplate () {...}) }`
fn device_aml(device: &AcpiDevice, uid: u32) -> Vec<u8> {
    // A seven-character ID of three letters and four hex digits is an EISA ID, which AML
    // stores compressed in a DWord; anything else is a string.
    let eisa = (device.id.hid.len() == 7).then(|| aml::EISAName::new(device.id.hid));
    let hid: &dyn Aml = match &eisa {
        Some(eisa) => eisa,
        None => &device.id.hid,
    };
    let ports: Vec<aml::IO> = device
        .ports
        .iter()
        // (An IO descriptor counts at most 255 ports; the devices described have 1 to 12.)
        .map(|&(first, count)| aml::IO::new(first, first, 1, count.min(255) as u8))
        .collect();
    let mmio: Vec<aml::Memory32Fixed> = device
        .mmio
        .iter()
        // (32-bit: every device window is in the MMIO hole below 4 GiB, layout.rs.)
        .map(|&(address, length)| aml::Memory32Fixed::new(true, address as u32, length as u32))
        .collect();
    // ISA IRQs are edge-triggered and active-high.
    let irq = device
        .irq
        .map(|irq| aml::Interrupt::new(true, true, false, false, irq));
    let mut resources: Vec<&dyn Aml> = Vec::new();
    resources.extend(ports.iter().map(|io| io as &dyn Aml));
    resources.extend(mmio.iter().map(|range| range as &dyn Aml));
    resources.extend(irq.iter().map(|irq| irq as &dyn Aml));
    let crs = aml::ResourceTemplate::new(resources);
    let mut bytes = Vec::new();
    aml::Device::new(
        device.id.name.into(),
        vec![
            &aml::Name::new("_HID".into(), hid),
            &aml::Name::new("_UID".into(), &uid),
            &aml::Name::new("_CRS".into(), &crs),
        ],
    )
    .to_aml_bytes(&mut bytes);
    bytes
}

/// The FADT of a hardware-reduced platform: the kernel finds the DSDT through it, powers off
/// through the sleep registers and resets through the reset register.
fn fadt(dsdt: u64, power: PowerPorts) -> Vec<u8> {
    let port = |port: u16| {
        GAS::new(
            AddressSpace::SystemIo,
            8,
            0,
            AccessSize::ByteAccess,
            port.into(),
        )
    };
    let mut fadt = FADTBuilder::new(OEM_ID, *b"MKVMFACP", OEM_REVISION)
        .dsdt_64(dsdt)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.iapc_boot_arch = (IAPC_BOOT_8042 | IAPC_BOOT_NO_VGA).into();
    fadt.sleep_control_reg = port(power.sleep_control);
    fadt.sleep_status_reg = port(power.sleep_status);
    fadt.reset_reg = port(power.reset);
    fadt.reset_value = power.reset_value;
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(*b"MINI-KVM").into();
    bytes_of(&fadt.finalize())
}

/// The MADT: the local APICs' address, one enabled local APIC per vCPU (APIC ID = CPU index,
/// as CPUID says: cpuid.rs), and the IOAPIC with GSIs from 0.
fn madt(cpus: usize) -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        *b"MKVMAPIC",
        OEM_REVISION,
        LocalInterruptController::Address(LOCAL_APIC_ADDRESS as u32),
    );
    for cpu in 0..cpus as u8 {
        madt.add_structure(ProcessorLocalApic::new(cpu, cpu, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(ioapic_id(cpus), IOAPIC_ADDRESS as u32, 0));
    bytes_of(&madt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    fn u64_at(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    fn sums_to_zero(bytes: &[u8]) -> bool {
        bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)) == 0
    }

    /// The table at `address`, as long as its header says, after checking its signature and
    /// checksum.
    fn table(memory: &GuestMemoryMmap, address: u64, signature: &[u8; 4]) -> Vec<u8> {
        let mut header = [0u8; 36];
        memory
            .read_slice(&mut header, GuestAddress(address))
            .unwrap();
        assert_eq!(&header[..4], signature);
        let mut bytes = vec![0u8; u32_at(&header, 4) as usize];
        memory
            .read_slice(&mut bytes, GuestAddress(address))
            .unwrap();
        assert!(sums_to_zero(&bytes), "{signature:?} checksum");
        bytes
    }

    fn uart() -> AcpiDevice {
        AcpiDevice {
            id: AcpiId {
                name: "COM1",
                hid: "PNP0501",
            },
            ports: vec![(0x3f8, 8)],
            mmio: vec![],
            irq: Some(4),
        }
    }

    fn power() -> PowerPorts {
        PowerPorts {
            sleep_control: 0x600,
            sleep_status: 0x601,
            reset: 0x602,
            reset_value: 1,
        }
    }

    #[test]
    fn the_rsdp_leads_to_every_table_and_every_checksum_holds() {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        let rsdp_address = write(&memory, 3, &[uart()], power()).unwrap();
        assert_eq!(rsdp_address, 0xe0000);

        let mut rsdp = [0u8; 36];
        memory
            .read_slice(&mut rsdp, GuestAddress(rsdp_address))
            .unwrap();
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(rsdp[15], 2, "ACPI 2.0+: an XSDT");
        assert!(sums_to_zero(&rsdp[..20]) && sums_to_zero(&rsdp));
        let xsdt = table(&memory, u64_at(&rsdp, 24), b"XSDT");
        assert_eq!(xsdt.len(), 36 + 2 * 8);
        let fadt = table(&memory, u64_at(&xsdt, 36), b"FACP");
        let madt = table(&memory, u64_at(&xsdt, 44), b"APIC");

        // FADT: hardware-reduced, with a reset register; the sleep registers and the reset
        // register are byte ports (GAS: space 1 = I/O, 8 bits wide).
        let flags = u32_at(&fadt, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        let gas = |at: usize| (fadt[at], fadt[at + 1], u64_at(&fadt, at + 4));
        assert_eq!(gas(116), (1, 8, 0x602), "reset register");
        assert_eq!(fadt[128], 1, "reset value");
        assert_eq!(gas(244), (1, 8, 0x600), "sleep control");
        assert_eq!(gas(256), (1, 8, 0x601), "sleep status");
        let dsdt = table(&memory, u64_at(&fadt, 140), b"DSDT");

        // MADT: the local APICs' address, then a local APIC per CPU and the IOAPIC.
        assert_eq!(u32_at(&madt, 36), 0xfee0_0000);
        let entries = &madt[44..];
        assert_eq!(entries.len(), 3 * 8 + 12);
        for cpu in 0..3u8 {
            let entry = &entries[8 * cpu as usize..][..8];
            assert_eq!(entry, [0, 8, cpu, cpu, 1, 0, 0, 0], "CPU {cpu}");
        }
        let ioapic = &entries[24..];
        assert_eq!(&ioapic[..4], [1, 12, 3, 0]);
        assert_eq!(u32_at(ioapic, 4), 0xfec0_0000);
        assert_eq!(u32_at(ioapic, 8), 0);

        // DSDT: the UART as COM1 with its EISA ID (PNP0501 compressed: 0x0105d041), its ports
        // and IRQ 4; and \_S5_.
        let aml = &dsdt[36..];
        let contains = |needle: &[u8]| aml.windows(needle.len()).any(|w| w == needle);
        assert!(contains(b"COM1"));
        assert!(contains(&[0x0c, 0x41, 0xd0, 0x05, 0x01]), "_HID PNP0501");
        // IO descriptor: decode16, 0x3f8..0x3f8, align 1, 8 ports.
        assert!(contains(&[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]));
        // Extended IRQ descriptor: consumer, edge, active-high, exclusive; one IRQ, 4.
        assert!(contains(&[0x89, 0x06, 0x00, 0x03, 0x01, 4, 0, 0, 0]));
        // Name (_S5_, Package (4) { 5, 5, 0, 0 })
        assert!(contains(b"_S5_\x12\x08\x04\x0a\x05\x0a\x05\x00\x00"));
    }

    #[test]
    fn a_vendor_id_is_a_string() {
        let fw_cfg = AcpiDevice {
            id: AcpiId {
                name: "FWCF",
                hid: "QEMU0002",
            },
            ports: vec![(0x510, 2)],
            mmio: vec![],
            irq: None,
        };
        let aml = device_aml(&fw_cfg, 0);
        // Name (_HID, "QEMU0002")
        let hid = b"_HID\x0dQEMU0002\x00";
        assert!(aml.windows(hid.len()).any(|w| w == hid));
    }

    #[test]
    fn the_tables_need_the_bios_area() {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x80000)]).unwrap();
        assert!(matches!(
            write(&memory, 1, &[], power()),
            Err(AcpiError::NoRoom)
        ));
    }
}
