//! Writing NumPy `.npy` files (format 1.0, little-endian, C order, 1-D), so that Python can load them
//! with `np.load(..., mmap_mode="r")` without a copy.

use std::io::{self, Write};

/// Plain numeric element types (no padding, every bit pattern valid).
///
/// # Safety
/// `write` reinterprets a `&[Self]` as bytes on little-endian machines, which is sound only for a
/// type without padding whose in-memory bytes are its `write_le` bytes (the test below checks the
/// second for every implementation).
pub unsafe trait NpyElement: Copy + Send + Sync {
    const DESCR: &'static str;
    fn write_le(self, out: &mut Vec<u8>);
}

macro_rules! npy_element {
    ($t:ty, $d:literal) => {
        // SAFETY: a primitive number: no padding, little-endian bytes = memory on this target.
        unsafe impl NpyElement for $t {
            const DESCR: &'static str = $d;
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}
npy_element!(i32, "<i4");
npy_element!(i64, "<i8");
npy_element!(f32, "<f4");
npy_element!(f64, "<f8");

pub fn header(descr: &str, len: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({len},), }}");
    // Magic (6) + version (2) + header length (2) + dict + padding + '\n' is a multiple of 64.
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let mut h = Vec::with_capacity(unpadded + pad);
    h.extend_from_slice(b"\x93NUMPY\x01\x00");
    h.extend_from_slice(&((dict.len() + pad + 1) as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.extend(std::iter::repeat_n(b' ', pad));
    h.push(b'\n');
    h
}

pub fn write<T: NpyElement, W: Write>(mut w: W, data: &[T]) -> io::Result<()> {
    w.write_all(&header(T::DESCR, data.len()))?;
    if cfg!(target_endian = "little") {
        // SAFETY: the element types are plain integers/floats with no padding; on a little-endian
        // machine their in-memory bytes are exactly the .npy payload.
        let bytes = unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) };
        w.write_all(bytes)?;
        return w.flush();
    }
    let mut buf = Vec::with_capacity(1 << 16);
    for chunk in data.chunks(1 << 13) {
        buf.clear();
        for &x in chunk {
            x.write_le(&mut buf);
        }
        w.write_all(&buf)?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_is_aligned() {
        for n in [0usize, 7, 123456789] {
            let h = super::header("<i8", n);
            assert_eq!(h.len() % 64, 0);
            assert!(h.ends_with(b"\n"));
        }
        let mut out = Vec::new();
        super::write(&mut out, &[1i32, -2]).unwrap();
        assert_eq!(&out[out.len() - 8..], &[1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff]);
    }

    /// The byte reinterpretation in `write` must agree with the element-by-element encoding.
    fn payload_matches_write_le<T: super::NpyElement>(data: &[T]) {
        let mut out = Vec::new();
        super::write(&mut out, data).unwrap();
        let mut expected = Vec::new();
        data.iter().for_each(|&x| x.write_le(&mut expected));
        assert_eq!(&out[out.len() - expected.len()..], &expected[..]);
        assert_eq!(out.len(), super::header(T::DESCR, data.len()).len() + expected.len());
    }

    #[test]
    fn every_element_type_writes_its_little_endian_bytes() {
        payload_matches_write_le(&[i32::MIN, -1, 0, 7, i32::MAX]);
        payload_matches_write_le(&[i64::MIN, -1, 0, 1 << 40, i64::MAX]);
        payload_matches_write_le(&[f32::MIN, -0.0, 1.5, f32::INFINITY, f32::NAN]);
        payload_matches_write_le(&[f64::MIN, -0.0, 1e300, f64::NEG_INFINITY]);
    }
}
