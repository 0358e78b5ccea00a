//! Page headers checked before the `parquet` crate decodes a column chunk. It reserves, and
//! fills, a page's claimed uncompressed size before it decompresses the page, so a 1 KB file
//! whose page header claimed 1.4 GB took 1.4 GB of memory (found by the `parquet_read` fuzz
//! target), and sizes a dictionary by its claimed value count. Here each page header of the
//! chunk is read as the crate reads it (Thrift compact protocol: `uncompressed_page_size` = 2,
//! `compressed_page_size` = 3, `dictionary_page_header.num_values` = 7.1; every other field
//! skipped), its size bounded by what it stores ([`max_page`]) and a dictionary's count by its
//! bytes.

use parquet::file::reader::ChunkReader;

/// The most bytes a page of `stored` compressed bytes may claim to expand to: 16 MiB plus 256
/// times what it stores (pages are about 1 MiB uncompressed and text compresses a few times).
pub fn max_page(stored: u64) -> u64 {
    (16 << 20) + stored.saturating_mul(256)
}

/// Check every page header of the column chunk at `[start, start + len)`. A header this
/// reader cannot parse is refused too (writers never produce one; a lenient pass would let a
/// header through that the `parquet` crate reads differently).
pub fn check_chunk<R: ChunkReader>(r: &R, start: u64, len: u64) -> Result<(), String> {
    let end = start.saturating_add(len).min(r.len());
    let mut pos = start;
    let mut page = 0u64;
    while pos < end {
        let Ok(buf) = r.get_bytes(pos, (end - pos).min(1 << 20) as usize) else { return Ok(()) };
        let claims =
            page_header(&buf).ok_or_else(|| format!("page {page} of a column has an unreadable header"))?;
        let (u, c) = (claims.uncompressed.max(0) as u64, claims.stored.max(0) as u64);
        // A dictionary value takes at least 4 bytes (a length prefix, an INT32), and the crate
        // sizes the dictionary by its claimed count before reading any.
        if let Some(n) = claims.dict_values
            && n.max(0) as u64 > u / 4 + 1
        {
            return Err(format!(
                "the dictionary page of a column claims {n} values in {u} bytes: a damaged or crafted file"
            ));
        }
        if u > max_page(c) {
            return Err(format!(
                "page {page} of a column claims {u} bytes uncompressed from {c} stored (at most {} accepted): a damaged or crafted file",
                max_page(c)
            ));
        }
        pos = pos.saturating_add(claims.header_len as u64).saturating_add(c);
        page += 1;
    }
    Ok(())
}

/// A cursor over Thrift compact-protocol bytes, reading as the `parquet` crate's own reader
/// does (`parquet_thrift.rs`): known fields by id whatever their wire type, a STOP wherever a
/// field header's low nibble is 0, varints of any length, bools in lists without a byte. Where
/// the two readers disagreed, a header this one saw as small was a large one to the crate.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let x = *self.b.get(self.i)?;
        self.i += 1;
        Some(x)
    }

    fn varint(&mut self) -> Option<u64> {
        let (mut v, mut shift) = (0u64, 0u32);
        loop {
            let x = self.byte()?;
            v |= u64::from(x & 0x7f).wrapping_shl(shift);
            if x & 0x80 == 0 {
                return Some(v);
            }
            shift = shift.wrapping_add(7);
        }
    }

    /// An i32 as the crate reads one: zigzag of the varint as an i64, cut to 32 bits.
    fn i32(&mut self) -> Option<i32> {
        let v = self.varint()?;
        Some(((v >> 1) as i64 ^ -((v & 1) as i64)) as i32)
    }

    fn skip_bytes(&mut self, n: u64) -> Option<()> {
        let n = usize::try_from(n).ok()?;
        (self.b.len() - self.i >= n).then(|| self.i += n)
    }

    /// A field header: None at STOP, else (id, wire type).
    fn field(&mut self, last: i16) -> Option<Option<(i16, u8)>> {
        let h = self.byte()?;
        if h & 15 == 0 {
            return Some(None);
        }
        let id = match h >> 4 {
            0 => self.i32()? as i16,
            d => last.checked_add(i16::from(d))?,
        };
        Some(Some((id, h & 15)))
    }

    /// Skip a value of wire type `ty` (as the crate's `skip_till_depth`).
    fn skip(&mut self, ty: u8, depth: u32) -> Option<()> {
        if depth > 64 {
            return None;
        }
        match ty {
            1 | 2 => Some(()),
            3 => self.byte().map(drop),
            4..=6 => self.varint().map(drop),
            7 => self.skip_bytes(8),
            8 => {
                let n = self.varint()?;
                self.skip_bytes(n)
            }
            9 | 10 => {
                let h = self.byte()?;
                let n = if h >> 4 == 15 { self.varint()? } else { u64::from(h >> 4) };
                self.repeat(n, |c| c.skip(h & 15, depth + 1))
            }
            11 => {
                let n = self.varint()?;
                if n == 0 {
                    return Some(());
                }
                let kv = self.byte()?;
                self.repeat(n, |c| {
                    c.skip(kv >> 4, depth + 1)?;
                    c.skip(kv & 15, depth + 1)
                })
            }
            12 => self.strukt(depth + 1, |c, _, ty| c.skip(ty, depth + 1)),
            13 => self.skip_bytes(16),
            _ => None,
        }
    }

    /// `n` times `f`, refusing counts the remaining bytes cannot hold.
    fn repeat(&mut self, n: u64, mut f: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if n > (self.b.len() - self.i) as u64 {
            return None;
        }
        (0..n).try_for_each(|_| f(self))
    }

    /// A struct's fields up to its STOP, each read by `field(cursor, id, wire type)`.
    fn strukt(&mut self, depth: u32, mut field: impl FnMut(&mut Self, i16, u8) -> Option<()>) -> Option<()> {
        if depth > 64 {
            return None;
        }
        let mut last = 0i16;
        while let Some((id, ty)) = self.field(last)? {
            field(self, id, ty)?;
            last = id;
        }
        Some(())
    }

    /// A nested page header (data v1, index, dictionary, data v2): its varint fields `ints`
    /// read as i32 (`first` gets field 1), its bool fields `bools` as the crate reads one, the
    /// rest skipped by wire type.
    fn nested(&mut self, ints: &[i16], bools: &[i16], first: &mut Option<i32>) -> Option<()> {
        self.strukt(1, |c, id, ty| {
            if ints.contains(&id) {
                let v = c.i32()?;
                if id == 1 {
                    *first = Some(v);
                }
                Some(())
            } else if bools.contains(&id) {
                if matches!(ty, 1 | 2) { Some(()) } else { c.byte().map(drop) }
            } else {
                c.skip(ty, 1)
            }
        })
    }
}

/// What a `PageHeader` claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Claims {
    /// Bytes of the header itself.
    header_len: usize,
    /// `uncompressed_page_size` (2).
    uncompressed: i32,
    /// `compressed_page_size` (3).
    stored: i32,
    /// `dictionary_page_header.num_values` (7.1), for a dictionary page.
    dict_values: Option<i32>,
}

/// The claims of the `PageHeader` at the start of `b`, its fields read by id as the crate
/// reads them (1..4 i32; 5 data page, 6 index page, 7 dictionary page, 8 data page v2).
fn page_header(b: &[u8]) -> Option<Claims> {
    let mut c = Cursor { b, i: 0 };
    let (mut uncompressed, mut stored, mut dict_values, mut ignored) = (None, None, None, None);
    c.strukt(0, |c, id, ty| match id {
        1 | 4 => c.i32().map(drop),
        2 => c.i32().map(|v| uncompressed = Some(v)),
        3 => c.i32().map(|v| stored = Some(v)),
        5 => c.nested(&[1, 2, 3, 4], &[], &mut ignored),
        6 => c.nested(&[], &[], &mut ignored),
        7 => c.nested(&[1, 2], &[3], &mut dict_values),
        8 => c.nested(&[1, 2, 3, 4, 5, 6], &[7], &mut ignored),
        _ => c.skip(ty, 0),
    })?;
    Some(Claims { header_len: c.i, uncompressed: uncompressed?, stored: stored?, dict_values })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zigzag(v: i64) -> Vec<u8> {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    /// A PageHeader: type (1), sizes (2, 3), a crc (4), a nested data page header (5) with a
    /// statistics struct holding a binary, then STOP.
    fn header(uncompressed: i32, stored: i32) -> Vec<u8> {
        let mut h = vec![0x15];
        h.extend(zigzag(0));
        h.push(0x15);
        h.extend(zigzag(uncompressed.into()));
        h.push(0x15);
        h.extend(zigzag(stored.into()));
        h.push(0x15);
        h.extend(zigzag(-7));
        h.push(0x1c); // field 5, struct
        h.push(0x15);
        h.extend(zigzag(77)); // num_values
        h.push(0x5c); // field 5 of it: statistics struct
        h.extend([0x18, 3, b'a', b'b', b'c', 0x11, 0x19, 0x25, 2, 4, 0]); // binary, bool, list<i32>
        h.push(0);
        h.push(0);
        h
    }

    #[test]
    fn page_headers_are_read_past_nested_fields_and_bounded() {
        let h = header(1_000_000, 300_000);
        let want =
            Claims { header_len: h.len(), uncompressed: 1_000_000, stored: 300_000, dict_values: None };
        assert_eq!(page_header(&h), Some(want));
        assert_eq!(page_header(&h[..h.len() - 1]), None, "cut short");
        assert_eq!(page_header(&[0x19, 0xf5]), None, "a list longer than the bytes");
        // A varint past 32 bits is cut to 32, as the parquet crate reads it.
        let long = [0x15, 0x04, 0x15, 0xfe, 0xff, 0xff, 0xff, 0x4a, 0x15, 0x50, 0x00];
        let want =
            Claims { header_len: long.len(), uncompressed: 1_476_395_007, stored: 40, dict_values: None };
        assert_eq!(page_header(&long), Some(want));
        // A dictionary page header (field 7) and its count.
        let mut dict = vec![0x15, 0x04, 0x15, 0x50, 0x15, 0x50, 0x4c, 0x15];
        dict.extend(zigzag(386_000_000));
        dict.extend([0, 0]);
        assert_eq!(page_header(&dict).unwrap().dict_values, Some(386_000_000));
        let b = bytes::Bytes::from(dict.clone());
        let e = check_chunk(&b, 0, dict.len() as u64).unwrap_err();
        assert!(e.contains("claims 386000000 values in 40 bytes"), "{e}");
        // Two pages back to back: one honest, one claiming 1.4 GB from 40 bytes.
        let mut chunk = header(100, 10);
        chunk.extend([0u8; 10]);
        chunk.extend(header(1_476_395_007, 40));
        chunk.extend([0u8; 40]);
        let b = bytes::Bytes::from(chunk.clone());
        let e = check_chunk(&b, 0, chunk.len() as u64).unwrap_err();
        assert!(e.contains("page 1 of a column claims 1476395007 bytes uncompressed from 40 stored"), "{e}");
        assert!(check_chunk(&b, 0, (header(100, 10).len() + 10) as u64).is_ok());
        assert_eq!(max_page(0), 16 << 20);
    }
}
