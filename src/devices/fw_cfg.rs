//! QEMU's firmware configuration device (fw_cfg), its legacy port interface: how firmware and
//! guests written for QEMU's PC machines ask the machine what it is (RAM size, CPU count,
//! kernel command line, and named "files"). Described in QEMU's docs/specs/fw_cfg.rst; the
//! item numbers are Linux's include/uapi/linux/qemu_fw_cfg.h.
//!
//! Two ports: the guest writes a 16-bit item number (a *selector*) to 0x510, then reads the
//! item's bytes one after the other from 0x511. Selecting again starts from the first byte;
//! reading past the end, or an item that does not exist, gives zeros. Numbers are
//! little-endian, except in the file directory, which is big-endian.
//!
//! ```text
//!   mov $0x510, %dx; mov $0x0005, %ax; out %ax, %dx    # select FW_CFG_NB_CPUS
//!   mov $0x511, %dx; in %dx, %al; ...                  # its 2 bytes, low byte first
//! ```
//!
//! mini-kvm offers the traditional interface only (no DMA: bit 1 of FW_CFG_ID is clear, so a
//! guest does not look for the DMA address register at 0x514), and the data cannot be written.

use crate::arch::x86::acpi::AcpiId;
use crate::devices::bus::{BusDevice, BusRange, IoAction};

/// The selector (offset 0, 16 bits) and data (offset 1, 8 bits) ports.
pub const FW_CFG_PORTS: BusRange = BusRange::new(0x510, 2);
const SELECTOR: u64 = 0;
const DATA: u64 = 1;

// Item numbers (qemu_fw_cfg.h).
pub const FW_CFG_SIGNATURE: u16 = 0x00;
pub const FW_CFG_ID: u16 = 0x01;
pub const FW_CFG_UUID: u16 = 0x02;
pub const FW_CFG_RAM_SIZE: u16 = 0x03;
pub const FW_CFG_NOGRAPHIC: u16 = 0x04;
pub const FW_CFG_NB_CPUS: u16 = 0x05;
pub const FW_CFG_MAX_CPUS: u16 = 0x0f;
pub const FW_CFG_CMDLINE_SIZE: u16 = 0x14;
pub const FW_CFG_CMDLINE_DATA: u16 = 0x15;
pub const FW_CFG_FILE_DIR: u16 = 0x19;
/// The first selector of a named file.
pub const FW_CFG_FILE_FIRST: u16 = 0x20;

/// A file name in the directory takes at most this many bytes, its NUL included.
const FILE_NAME_SIZE: usize = 56;

/// What the machine is, as the device tells it.
pub struct MachineFacts {
    pub ram_size: u64,
    pub cpus: u16,
    /// The kernel command line (`--cmdline`), if any.
    pub cmdline: Option<String>,
    /// Named files: "etc/e820" and the like.
    pub files: Vec<(String, Vec<u8>)>,
    /// The machine has a display (`--display` and the like): item 0x04, "no graphics", says 0.
    pub graphics: bool,
}

/// What a snapshot keeps of fw_cfg.
#[derive(serde::Serialize, serde::Deserialize)]
struct FwCfgState {
    selected: Option<usize>,
    offset: usize,
}

pub struct FwCfg {
    /// Every item's bytes, by selector.
    items: Vec<(u16, Vec<u8>)>,
    /// The selected item's index in `items`, or `None` for a selector with no item.
    selected: Option<usize>,
    /// The next byte of the selected item to read.
    offset: usize,
}

impl FwCfg {
    pub fn new(facts: &MachineFacts) -> FwCfg {
        let mut items = vec![
            (FW_CFG_SIGNATURE, b"QEMU".to_vec()),
            // Bit 0: the traditional interface. Bit 1 (DMA) clear.
            (FW_CFG_ID, 1u32.to_le_bytes().to_vec()),
            (FW_CFG_UUID, vec![0; 16]),
            (FW_CFG_RAM_SIZE, facts.ram_size.to_le_bytes().to_vec()),
            // No display: the console is the serial line.
            (
                FW_CFG_NOGRAPHIC,
                u16::from(!facts.graphics).to_le_bytes().to_vec(),
            ),
            (FW_CFG_NB_CPUS, facts.cpus.to_le_bytes().to_vec()),
            // No CPU hotplug: as many possible CPUs as present ones.
            (FW_CFG_MAX_CPUS, facts.cpus.to_le_bytes().to_vec()),
        ];
        // As QEMU: the size counts the terminating NUL, and both are there only with a command
        // line.
        if let Some(cmdline) = &facts.cmdline {
            let mut data = cmdline.as_bytes().to_vec();
            data.push(0);
            items.push((
                FW_CFG_CMDLINE_SIZE,
                (data.len() as u32).to_le_bytes().to_vec(),
            ));
            items.push((FW_CFG_CMDLINE_DATA, data));
        }
        // The directory: a big-endian count, then per file its big-endian size and selector, two
        // reserved bytes and its NUL-padded name.
        let mut directory = (facts.files.len() as u32).to_be_bytes().to_vec();
        for (index, (name, contents)) in facts.files.iter().enumerate() {
            let selector = FW_CFG_FILE_FIRST + index as u16;
            directory.extend_from_slice(&(contents.len() as u32).to_be_bytes());
            directory.extend_from_slice(&selector.to_be_bytes());
            directory.extend_from_slice(&[0, 0]);
            let mut padded = [0u8; FILE_NAME_SIZE];
            let name = &name.as_bytes()[..name.len().min(FILE_NAME_SIZE - 1)];
            padded[..name.len()].copy_from_slice(name);
            directory.extend_from_slice(&padded);
            items.push((selector, contents.clone()));
        }
        items.push((FW_CFG_FILE_DIR, directory));
        FwCfg {
            items,
            selected: None,
            offset: 0,
        }
    }

    fn select(&mut self, selector: u16) {
        self.selected = self.items.iter().position(|(key, _)| *key == selector);
        self.offset = 0;
    }

    fn next_byte(&mut self) -> u8 {
        let byte = self
            .selected
            .and_then(|index| self.items[index].1.get(self.offset).copied())
            .unwrap_or(0);
        self.offset = self.offset.saturating_add(1);
        byte
    }
}

/// The memory map as QEMU's "etc/e820" file has it: per entry a little-endian 64-bit address,
/// 64-bit length and 32-bit type, packed (20 bytes).
pub fn e820_file(map: &[(u64, u64, u32)]) -> Vec<u8> {
    let mut file = Vec::with_capacity(map.len() * 20);
    for &(address, length, kind) in map {
        file.extend_from_slice(&address.to_le_bytes());
        file.extend_from_slice(&length.to_le_bytes());
        file.extend_from_slice(&kind.to_le_bytes());
    }
    file
}

impl BusDevice for FwCfg {
    fn name(&self) -> &'static str {
        "fw_cfg"
    }

    /// The selected item and where its reading is; the items themselves are the machine's facts,
    /// which a restored machine is built with again.
    fn save_state(&self) -> crate::devices::DeviceState {
        crate::devices::DeviceState::of(&FwCfgState {
            selected: self.selected,
            offset: self.offset,
        })
    }

    fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), String> {
        let state: FwCfgState = crate::devices::state::parse_state(state)?;
        if state
            .selected
            .is_some_and(|index| index >= self.items.len())
        {
            return Err(format!("item {:?} does not exist", state.selected));
        }
        self.selected = state.selected;
        self.offset = state.offset;
        Ok(())
    }

    /// QEMU's ID for fw_cfg: Linux's qemu_fw_cfg driver binds to it.
    fn acpi_id(&self) -> Option<AcpiId> {
        Some(AcpiId {
            name: "FWCF",
            hid: "QEMU0002",
        })
    }

    /// The data port gives the selected item's next bytes (a wider `in` takes several); the
    /// selector port reads as zeros.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset == DATA {
            for byte in data.iter_mut() {
                *byte = self.next_byte();
            }
        } else {
            data.fill(0);
        }
    }

    /// A write to the selector port selects an item (a 16-bit `out`; a byte `out` selects
    /// 0x00-0xff). Writes to the data port are ignored: the items are read-only.
    fn write(&mut self, offset: u64, data: &[u8]) -> IoAction {
        if offset == SELECTOR {
            let low = data.first().copied().unwrap_or(0);
            let high = data.get(1).copied().unwrap_or(0);
            self.select(u16::from_le_bytes([low, high]));
        }
        IoAction::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> FwCfg {
        FwCfg::new(&MachineFacts {
            ram_size: 2 << 20,
            cpus: 3,
            cmdline: Some("console=ttyS0".into()),
            files: vec![("etc/e820".into(), e820_file(&[(0, 0x9fc00, 1)]))],
            graphics: false,
        })
    }

    fn read_item(device: &mut FwCfg, selector: u16, len: usize) -> Vec<u8> {
        device.write(SELECTOR, &selector.to_le_bytes());
        let mut bytes = vec![0; len];
        for byte in &mut bytes {
            let mut one = [0u8];
            device.read(DATA, &mut one);
            *byte = one[0];
        }
        bytes
    }

    #[test]
    fn the_well_known_items() {
        let mut fw_cfg = device();
        assert_eq!(read_item(&mut fw_cfg, FW_CFG_SIGNATURE, 4), b"QEMU");
        assert_eq!(read_item(&mut fw_cfg, FW_CFG_ID, 4), [1, 0, 0, 0]);
        assert_eq!(
            read_item(&mut fw_cfg, FW_CFG_RAM_SIZE, 8),
            (2u64 << 20).to_le_bytes()
        );
        assert_eq!(read_item(&mut fw_cfg, FW_CFG_NB_CPUS, 2), [3, 0]);
        assert_eq!(read_item(&mut fw_cfg, FW_CFG_MAX_CPUS, 2), [3, 0]);
        assert_eq!(
            read_item(&mut fw_cfg, FW_CFG_CMDLINE_SIZE, 4),
            [14, 0, 0, 0]
        );
        assert_eq!(
            read_item(&mut fw_cfg, FW_CFG_CMDLINE_DATA, 15),
            b"console=ttyS0\0\0"
        );
    }

    #[test]
    fn the_file_directory_is_big_endian_and_names_each_file() {
        let mut fw_cfg = device();
        let directory = read_item(&mut fw_cfg, FW_CFG_FILE_DIR, 4 + 64);
        assert_eq!(directory[..4], [0, 0, 0, 1]);
        assert_eq!(directory[4..8], [0, 0, 0, 20]);
        assert_eq!(directory[8..10], [0, 0x20]);
        assert_eq!(&directory[12..20], b"etc/e820");
        assert!(directory[20..68].iter().all(|&byte| byte == 0));
        let e820 = read_item(&mut fw_cfg, FW_CFG_FILE_FIRST, 20);
        assert_eq!(e820[8..16], 0x9fc00u64.to_le_bytes());
        assert_eq!(e820[16..], [1, 0, 0, 0]);
    }

    #[test]
    fn selecting_again_starts_over_and_unknown_items_read_as_zeros() {
        let mut fw_cfg = device();
        assert_eq!(read_item(&mut fw_cfg, FW_CFG_SIGNATURE, 2), b"QE");
        assert_eq!(read_item(&mut fw_cfg, FW_CFG_SIGNATURE, 6), b"QEMU\0\0");
        assert_eq!(read_item(&mut fw_cfg, 0x1234, 4), [0; 4]);
        // A wide read takes several bytes at once.
        fw_cfg.write(SELECTOR, &FW_CFG_SIGNATURE.to_le_bytes());
        let mut word = [0u8; 4];
        fw_cfg.read(DATA, &mut word);
        assert_eq!(&word, b"QEMU");
    }

    #[test]
    fn no_command_line_no_items() {
        let mut fw_cfg = FwCfg::new(&MachineFacts {
            ram_size: 1 << 20,
            cpus: 1,
            cmdline: None,
            files: Vec::new(),
            graphics: true,
        });
        assert_eq!(read_item(&mut fw_cfg, FW_CFG_NOGRAPHIC, 2), [0, 0]);
        assert_eq!(read_item(&mut fw_cfg, FW_CFG_CMDLINE_SIZE, 4), [0; 4]);
        assert_eq!(read_item(&mut fw_cfg, FW_CFG_FILE_DIR, 4), [0; 4]);
    }
}
