//! Reader for dlib's binary serialization format (`dlib/serialize.h`).
//!
//! Every read says what it expected and, on failure, where in the file it was: the
//! importer's messages are built from these errors.

use std::fmt;

/// A failure to read a dlib file: what was expected, what was found, and at which byte.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("at byte {offset}: expected {expected}, found {found}")]
pub struct SerError {
    /// Byte offset in the file where the bad item starts.
    pub offset: usize,
    /// What the reader was looking for (e.g. "con layer version").
    pub expected: String,
    /// What it found instead.
    pub found: String,
}

/// `2^e`, exactly: built from its bits in the normal range (a landmark model decodes over a
/// million floats, and `powi` loops), `powi` outside it.
fn pow2(e: i32) -> f64 {
    if (-1022..=1023).contains(&e) {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else {
        2f64.powi(e)
    }
}

/// A cursor over a dlib-serialized byte buffer.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Exponent values dlib uses to store infinities and NaN (`float_details.h`).
const EXP_POS_INF: i64 = 32000;
const EXP_NEG_INF: i64 = 32001;
const EXP_NAN: i64 = 32002;

impl<'a> Reader<'a> {
    /// Starts reading at the first byte of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Current byte offset.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Builds an error at `offset`.
    pub fn error_at(
        &self,
        offset: usize,
        expected: impl fmt::Display,
        found: impl fmt::Display,
    ) -> SerError {
        SerError {
            offset,
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], SerError> {
        if self.remaining() < n {
            return Err(self.error_at(
                self.pos,
                format!("{what} ({n} bytes)"),
                format!("end of file after {} bytes", self.remaining()),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Reads one of dlib's variable-length integers (control byte, then magnitude bytes).
    pub fn int(&mut self, what: &str) -> Result<i64, SerError> {
        let start = self.pos;
        let ctrl = self.take(1, what)?[0];
        let n = (ctrl & 0x0f) as usize;
        if ctrl & 0x70 != 0 || n == 0 || n > 8 {
            return Err(self.error_at(
                start,
                format!("{what} (integer)"),
                format!("control byte 0x{ctrl:02x}"),
            ));
        }
        let bytes = self.take(n, what)?;
        let mut mag: u64 = 0;
        for (i, b) in bytes.iter().enumerate() {
            mag |= (*b as u64) << (8 * i);
        }
        if ctrl & 0x80 != 0 {
            if mag > i64::MAX as u64 + 1 {
                return Err(self.error_at(
                    start,
                    format!("{what} (integer)"),
                    "a negative value out of range",
                ));
            }
            Ok((mag as i128).wrapping_neg() as i64)
        } else {
            if mag > i64::MAX as u64 {
                return Err(self.error_at(
                    start,
                    format!("{what} (integer)"),
                    "a value out of range",
                ));
            }
            Ok(mag as i64)
        }
    }

    /// Reads a non-negative integer that must fit in `usize`.
    pub fn uint(&mut self, what: &str) -> Result<usize, SerError> {
        let start = self.pos;
        let v = self.int(what)?;
        usize::try_from(v).map_err(|_| self.error_at(start, format!("{what} (non-negative)"), v))
    }

    /// Reads an integer and checks it equals `want`.
    pub fn expect_int(&mut self, want: i64, what: &str) -> Result<(), SerError> {
        let start = self.pos;
        let v = self.int(what)?;
        if v != want {
            return Err(self.error_at(start, format!("{what} = {want}"), v));
        }
        Ok(())
    }

    /// Reads a dlib `double` (mantissa then exponent).
    pub fn double(&mut self, what: &str) -> Result<f64, SerError> {
        let mantissa = self.int(what)?;
        let start = self.pos;
        let exponent = self.int(what)?;
        Ok(match exponent {
            EXP_POS_INF => f64::INFINITY,
            EXP_NEG_INF => f64::NEG_INFINITY,
            EXP_NAN => f64::NAN,
            e if (-32768..=32767).contains(&e) => mantissa as f64 * pow2(e as i32),
            e => return Err(self.error_at(start, format!("{what} (float exponent)"), e)),
        })
    }

    /// Reads a dlib `float` (stored like a double).
    pub fn float(&mut self, what: &str) -> Result<f32, SerError> {
        Ok(self.double(what)? as f32)
    }

    /// Reads a dlib `bool` (ASCII `'1'` or `'0'`).
    pub fn bool(&mut self, what: &str) -> Result<bool, SerError> {
        let start = self.pos;
        match self.take(1, what)?[0] {
            b'1' => Ok(true),
            b'0' => Ok(false),
            b => Err(self.error_at(
                start,
                format!("{what} (bool '0' or '1')"),
                format!("byte 0x{b:02x}"),
            )),
        }
    }

    /// Reads a dlib string (length, then bytes).
    pub fn string(&mut self, what: &str) -> Result<String, SerError> {
        let start = self.pos;
        let len = self.uint(what)?;
        if len > self.remaining() {
            return Err(self.error_at(
                start,
                format!("{what} (string)"),
                format!("a length of {len} past the end"),
            ));
        }
        let bytes = self.take(len, what)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    /// Reads a string and checks it equals `want`.
    pub fn expect_string(&mut self, want: &str, what: &str) -> Result<(), SerError> {
        let start = self.pos;
        // Peek at the length first so a binary blob is not reported as a huge string.
        let s = self.string(what)?;
        if s != want {
            let shown: String = s.chars().take(40).collect();
            return Err(self.error_at(start, format!("{what} \"{want}\""), format!("\"{shown}\"")));
        }
        Ok(())
    }

    /// Reads `n` raw little-endian f32 values.
    pub fn raw_f32s(&mut self, n: usize, what: &str) -> Result<Vec<f32>, SerError> {
        let bytes_len = n
            .checked_mul(4)
            .ok_or_else(|| self.error_at(self.pos, what, format!("an element count of {n}")))?;
        let bytes = self.take(bytes_len, what)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Reads a `resizable_tensor`: version 2, n, k, nr, nc, then the raw values.
    pub fn tensor(&mut self, what: &str) -> Result<Tensor, SerError> {
        self.expect_int(2, &format!("{what}: tensor version"))?;
        let mut dims = [0usize; 4];
        for (d, name) in dims.iter_mut().zip(["n", "k", "nr", "nc"]) {
            *d = self.uint(&format!("{what}: tensor {name}"))?;
        }
        let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let count = match count {
            Some(c) if c.saturating_mul(4) <= self.remaining() => c,
            _ => {
                return Err(self.error_at(
                    self.pos,
                    format!("{what}: tensor data"),
                    format!(
                        "end of file: dims {dims:?} need {} bytes, only {} are left",
                        dims.iter().fold(4u128, |a, &d| a.saturating_mul(d as u128)),
                        self.remaining()
                    ),
                ))
            }
        };
        let data = self.raw_f32s(count, &format!("{what}: tensor data"))?;
        Ok(Tensor { dims, data })
    }

    /// Reads a tensor that must be empty (dlib's gradient and cache tensors in a trained file).
    pub fn empty_tensor(&mut self, what: &str) -> Result<(), SerError> {
        let start = self.pos;
        let t = self.tensor(what)?;
        if !t.data.is_empty() {
            return Err(self.error_at(
                start,
                format!("{what} (empty tensor)"),
                format!("a tensor of dims {:?}", t.dims),
            ));
        }
        Ok(())
    }

    /// Reads an `alias_tensor`: version 1, n, k, nr, nc (no data).
    pub fn alias_tensor(&mut self, what: &str) -> Result<[usize; 4], SerError> {
        self.expect_int(1, &format!("{what}: alias tensor version"))?;
        let mut dims = [0usize; 4];
        for (d, name) in dims.iter_mut().zip(["n", "k", "nr", "nc"]) {
            *d = self.uint(&format!("{what}: alias tensor {name}"))?;
        }
        Ok(dims)
    }

    /// Reads a `dlib::matrix<float>`: −rows, −cols, then rows·cols floats row-major.
    pub fn matrix_f32(&mut self, what: &str) -> Result<Matrix, SerError> {
        let start = self.pos;
        // The part read is named in the error only (a name formatted per element would cost
        // more than the element: a landmark model has over a million).
        let part = |part: &'static str| {
            move |mut e: SerError| {
                e.expected = e
                    .expected
                    .replacen(what, &format!("{what}: matrix {part}"), 1);
                e
            }
        };
        let nr = -self.int(what).map_err(part("rows"))?;
        let nc = -self.int(what).map_err(part("cols"))?;
        if nr < 0 || nc < 0 || (nr as u128) * (nc as u128) > self.remaining() as u128 {
            return Err(self.error_at(
                start,
                format!("{what} (matrix size)"),
                format!("{nr}×{nc}"),
            ));
        }
        let (nr, nc) = (nr as usize, nc as usize);
        let mut data = Vec::with_capacity(nr * nc);
        for _ in 0..nr * nc {
            data.push(self.float(what).map_err(part("element"))?);
        }
        Ok(Matrix {
            rows: nr,
            cols: nc,
            data,
        })
    }

    /// Reads a `u32` serialized as a dlib integer.
    pub fn u32(&mut self, what: &str) -> Result<u32, SerError> {
        let start = self.pos;
        let v = self.int(what)?;
        u32::try_from(v).map_err(|_| self.error_at(start, format!("{what} (u32)"), v))
    }

    /// Fails unless every byte has been read.
    pub fn finish(&self, what: &str) -> Result<(), SerError> {
        if self.remaining() != 0 {
            return Err(self.error_at(
                self.pos,
                format!("the end of {what}"),
                format!("{} more bytes", self.remaining()),
            ));
        }
        Ok(())
    }
}

/// A dense tensor as dlib stores it: dims `[n, k, nr, nc]` and the values in that order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// `[n, k, nr, nc]`.
    pub dims: [usize; 4],
    /// Row-major values.
    pub data: Vec<f32>,
}

/// A dense row-major float matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row-major values.
    pub data: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_from_the_format_notes() {
        let mut r = Reader::new(&[0x01, 0x00, 0x01, 0x96, 0x81, 0x1c, 0x02, 0x00, 0x01]);
        assert_eq!(r.int("zero").unwrap(), 0);
        assert_eq!(r.int("150").unwrap(), 150);
        assert_eq!(r.int("-28").unwrap(), -28);
        assert_eq!(r.int("256").unwrap(), 256);
        r.finish("test").unwrap();
    }

    #[test]
    fn powers_of_two_are_exact() {
        for e in -1100..=1100 {
            assert_eq!(pow2(e), 2f64.powi(e), "2^{e}");
        }
    }

    #[test]
    fn float_is_mantissa_then_exponent() {
        // 10737418 × 2^−28 = 0.04
        let mut r = Reader::new(&[0x03, 0x0a, 0xd7, 0xa3, 0x81, 0x1c]);
        let v = r.float("x").unwrap();
        assert!((v - 0.04).abs() < 1e-9, "{v}");
    }

    #[test]
    fn special_float_exponents() {
        // mantissa 0, exponent 32000 / 32001 / 32002
        let enc = |e: u16| {
            let b = e.to_le_bytes();
            vec![0x01, 0x00, 0x02, b[0], b[1]]
        };
        assert_eq!(Reader::new(&enc(32000)).float("x").unwrap(), f32::INFINITY);
        assert_eq!(
            Reader::new(&enc(32001)).float("x").unwrap(),
            f32::NEG_INFINITY
        );
        assert!(Reader::new(&enc(32002)).float("x").unwrap().is_nan());
    }

    #[test]
    fn bad_control_byte_names_the_offset() {
        let mut r = Reader::new(&[0x01, 0x05, 0x30, 0x00]);
        r.int("first").unwrap();
        let e = r.int("second").unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(e.to_string().contains("control byte 0x30"), "{e}");
    }

    #[test]
    fn truncated_integer_is_an_error() {
        let e = Reader::new(&[0x02, 0x00]).int("n").unwrap_err();
        assert!(e.found.contains("end of file"), "{e}");
    }

    #[test]
    fn empty_tensor_and_raw_data() {
        let mut r = Reader::new(&[0x01, 0x02, 0x01, 0x00, 0x01, 0x00, 0x01, 0x00, 0x01, 0x00]);
        r.empty_tensor("grad").unwrap();
        r.finish("t").unwrap();

        let mut bytes = vec![0x01, 0x02, 0x01, 0x01, 0x01, 0x02, 0x01, 0x01, 0x01, 0x01];
        bytes.extend_from_slice(&1.5f32.to_le_bytes());
        bytes.extend_from_slice(&(-2.0f32).to_le_bytes());
        let t = Reader::new(&bytes).tensor("w").unwrap();
        assert_eq!(t.dims, [1, 2, 1, 1]);
        assert_eq!(t.data, vec![1.5, -2.0]);
    }

    #[test]
    fn tensor_larger_than_the_file_is_refused_without_allocating() {
        // dims 1e6 × 1e6 × 1 × 1 with no data
        let mut bytes = vec![0x01, 0x02];
        for d in [1_000_000u32, 1_000_000, 1, 1] {
            let b = d.to_le_bytes();
            bytes.extend_from_slice(&[0x03, b[0], b[1], b[2]]);
        }
        let e = Reader::new(&bytes).tensor("w").unwrap_err();
        assert!(e.to_string().contains("tensor data"), "{e}");
    }

    #[test]
    fn strings_and_bools() {
        let mut bytes = vec![0x01, 0x05];
        bytes.extend_from_slice(b"relu_");
        bytes.extend_from_slice(b"10");
        let mut r = Reader::new(&bytes);
        r.expect_string("relu_", "layer name").unwrap();
        assert!(r.bool("a").unwrap());
        assert!(!r.bool("b").unwrap());
        let e = Reader::new(&[0x01, 0x03, b'c', b'o', b'n'])
            .expect_string("fc_", "name")
            .unwrap_err();
        assert!(e.to_string().contains("\"con\""), "{e}");
    }
}
