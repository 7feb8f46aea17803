//! Re-encodes the PKCS#8 keys rcgen makes as PKCS#1 (RSA) or SEC1 (ECDSA) PEM, as openssl writes them.
//!
//! rcgen only ever hands out PKCS#8, but Secrets in the wild also carry `RSA PRIVATE KEY` and
//! `EC PRIVATE KEY` files, so the sidecar must be tested against real ones. No crate at hand
//! writes those, and the conversion is small: the PKCS#8 `privateKey` OCTET STRING already *is*
//! the RSAPrivateKey / ECPrivateKey, so a few lines of DER walking suffice.

/// DER tag of an OCTET STRING.
const TAG_OCTET_STRING: u8 = 0x04;
/// DER tag of a SEQUENCE (constructed).
const TAG_SEQUENCE: u8 = 0x30;
/// DER tag of ECPrivateKey's `parameters [0] EXPLICIT` field.
const TAG_EC_PARAMETERS: u8 = 0xa0;

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 RSA key, PEM-encoded as `RSA PRIVATE KEY`.
pub fn pkcs8_to_pkcs1_pem(pkcs8: &[u8]) -> String {
    let key = Pkcs8::parse(pkcs8);
    pem_encode("RSA PRIVATE KEY", key.private_key)
}

/// The SEC1 `ECPrivateKey` inside a PKCS#8 EC key, PEM-encoded as `EC PRIVATE KEY`.
///
/// PKCS#8 moves the curve into its AlgorithmIdentifier, so the embedded ECPrivateKey usually
/// lacks `parameters [0]`; we put the named curve back because `openssl ec` always writes it
/// and some parsers insist on it.
pub fn pkcs8_to_sec1_pem(pkcs8: &[u8]) -> String {
    let key = Pkcs8::parse(pkcs8);
    let curve_oid = key
        .algorithm_parameters
        .expect("an EC PKCS#8 key names its curve in the AlgorithmIdentifier");
    let sec1 = add_ec_parameters(key.private_key, curve_oid);
    pem_encode("EC PRIVATE KEY", &sec1)
}

/// The parts of a PKCS#8 `PrivateKeyInfo` we need, borrowed from the DER.
struct Pkcs8<'a> {
    /// The whole TLV of the AlgorithmIdentifier's parameters (the curve OID for EC keys).
    algorithm_parameters: Option<&'a [u8]>,
    /// The contents of the `privateKey` OCTET STRING.
    private_key: &'a [u8],
}

impl<'a> Pkcs8<'a> {
    fn parse(der: &'a [u8]) -> Self {
        let (tag, body, _) = read_tlv(der);
        assert_eq!(tag, TAG_SEQUENCE, "PKCS#8 is a SEQUENCE");
        let (_version, _, rest) = read_tlv(body);
        let (tag, algorithm, rest) = read_tlv(rest);
        assert_eq!(tag, TAG_SEQUENCE, "AlgorithmIdentifier is a SEQUENCE");
        let (_oid, _, params) = read_tlv(algorithm);
        let algorithm_parameters = (!params.is_empty()).then(|| whole_tlv(params));
        let (tag, private_key, _) = read_tlv(rest);
        assert_eq!(tag, TAG_OCTET_STRING, "privateKey is an OCTET STRING");
        Pkcs8 {
            algorithm_parameters,
            private_key,
        }
    }
}

/// Inserts `parameters [0] EXPLICIT <curve_oid>` into an ECPrivateKey that lacks it.
fn add_ec_parameters(ec_private_key: &[u8], curve_oid: &[u8]) -> Vec<u8> {
    let (tag, body, _) = read_tlv(ec_private_key);
    assert_eq!(tag, TAG_SEQUENCE, "ECPrivateKey is a SEQUENCE");
    let version = whole_tlv(body);
    let rest = &body[version.len()..];
    let private_key = whole_tlv(rest);
    let optional_fields = &rest[private_key.len()..];
    if optional_fields.first() == Some(&TAG_EC_PARAMETERS) {
        return ec_private_key.to_vec();
    }
    let mut new_body = Vec::new();
    new_body.extend_from_slice(version);
    new_body.extend_from_slice(private_key);
    new_body.extend(encode_tlv(TAG_EC_PARAMETERS, curve_oid));
    new_body.extend_from_slice(optional_fields);
    encode_tlv(TAG_SEQUENCE, &new_body)
}

/// Splits one DER TLV off the front of `der`: (tag, contents, rest). Panics on malformed input,
/// which here can only mean rcgen changed what it emits.
fn read_tlv(der: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = der[0];
    let first = der[1];
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        let len = der[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    (tag, &der[header..header + len], &der[header + len..])
}

/// The first complete TLV of `der`, header included.
fn whole_tlv(der: &[u8]) -> &[u8] {
    let (_, _, rest) = read_tlv(der);
    &der[..der.len() - rest.len()]
}

fn encode_tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(contents);
    out
}

/// PEM with 64-column base64 lines, as openssl writes it.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
