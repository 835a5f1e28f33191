//! Loading the user programs into a new address space.
//!
//! There is no file system: the user programs are one ELF file (src/user, linked at
//! `USER_BASE` by user.ld), embedded in the kernel image at a page boundary. Every process gets
//! its pages from it: the read-only parts (code, constants) are mapped straight from the
//! embedded file, the same physical pages for every process; the writable part (data) is
//! copied into fresh frames, so each process has its own.

use crate::abi::{USER_BASE, USER_END, USER_STACK_PAGES};
use crate::frames::{self, PAGE_SIZE};
use crate::paging::{self, SHARED, WRITABLE};

#[repr(C, align(4096))]
struct PageAligned<T: ?Sized>(T);

/// The user programs' ELF file; build.rs builds it first and names it here.
static USER_ELF: &PageAligned<[u8]> = &PageAligned(*include_bytes!(env!("MINI_OS_USER_ELF")));

const PT_LOAD: u32 = 1;
const PF_WRITE: u32 = 2;

fn bytes<const N: usize>(image: &[u8], at: u64) -> Option<[u8; N]> {
    let at = usize::try_from(at).ok()?;
    image.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn u16_at(image: &[u8], at: u64) -> Option<u64> {
    bytes::<2>(image, at).map(|b| u64::from(u16::from_le_bytes(b)))
}

fn u32_at(image: &[u8], at: u64) -> Option<u32> {
    bytes::<4>(image, at).map(u32::from_le_bytes)
}

fn u64_at(image: &[u8], at: u64) -> Option<u64> {
    bytes::<8>(image, at).map(u64::from_le_bytes)
}

/// Maps the user ELF file's segments into `pml4`; returns the entry point.
pub fn load(pml4: u64) -> Option<u64> {
    let image = &USER_ELF.0;
    if bytes::<5>(image, 0)? != *b"\x7fELF\x02" {
        return None;
    }
    let entry = u64_at(image, 0x18)?;
    let (header_table, header_size, headers) = (
        u64_at(image, 0x20)?,
        u16_at(image, 0x36)?,
        u16_at(image, 0x38)?,
    );
    for i in 0..headers {
        let header = header_table + i * header_size;
        if u32_at(image, header)? != PT_LOAD {
            continue;
        }
        let flags = u32_at(image, header + 4)?;
        let offset = u64_at(image, header + 8)?;
        let address = u64_at(image, header + 0x10)?;
        let file_size = u64_at(image, header + 0x20)?;
        let memory_size = u64_at(image, header + 0x28)?;
        let end = address.checked_add(memory_size)?;
        let stack_bottom = USER_END - USER_STACK_PAGES * PAGE_SIZE;
        if address < USER_BASE || end > stack_bottom || file_size > memory_size {
            return None;
        }
        image.get(offset as usize..(offset + file_size) as usize)?;
        load_segment(
            pml4,
            image,
            flags & PF_WRITE != 0,
            offset,
            address,
            file_size,
            end,
        )?;
    }
    Some(entry)
}

fn load_segment(
    pml4: u64,
    image: &[u8],
    writable: bool,
    offset: u64,
    address: u64,
    file_size: u64,
    end: u64,
) -> Option<()> {
    let file_end = address + file_size;
    let shareable =
        !writable && address.is_multiple_of(PAGE_SIZE) && offset.is_multiple_of(PAGE_SIZE);
    let mut page = address & !(PAGE_SIZE - 1);
    while page < end {
        if shareable {
            // Read-only and page-aligned in the file: map the embedded file's own page.
            let frame = image.as_ptr() as u64 + offset + (page - address);
            paging::map_user(pml4, page, frame, SHARED)?;
        } else {
            let frame = frames::alloc()?;
            // The part of this page that comes from the file; the rest stays zero (.bss).
            let (from, to) = (page.max(address), (page + PAGE_SIZE).min(file_end));
            if from < to {
                let source = &image[(offset + (from - address)) as usize..][..(to - from) as usize];
                // SAFETY: a fresh, identity-mapped frame; the copy stays inside it.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        source.as_ptr(),
                        (frame + (from - page)) as *mut u8,
                        source.len(),
                    )
                };
            }
            let flags = if writable { WRITABLE } else { 0 };
            if paging::map_user(pml4, page, frame, flags).is_none() {
                frames::free(frame);
                return None;
            }
        }
        page += PAGE_SIZE;
    }
    Some(())
}
