//! Tensor bytes as the Open Inference Protocol frames them (the binary tensor data extension
//! over HTTP, `raw_input_contents` / `raw_output_contents` over gRPC): little-endian numbers,
//! and BYTES elements each a 4-byte little-endian length and its bytes.

/// BYTES elements as the protocol serialises them.
pub fn elements(items: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in items {
        out.extend((b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// Little-endian FP32 values.
pub fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Little-endian INT64 values.
pub fn i64s(b: &[u8]) -> Vec<i64> {
    b.chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// BYTES elements as UTF-8 strings.
pub fn strings(mut b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let n = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
        out.push(String::from_utf8(b[4..4 + n].to_vec()).unwrap());
        b = &b[4 + n..];
    }
    out
}
