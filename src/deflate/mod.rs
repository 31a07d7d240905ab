//! permessage-deflate (RFC 7692): the options a handler or a client asks
//! for, the negotiation of `Sec-WebSocket-Extensions`, and the two halves of
//! the codec: `inflate.rs` (the bounded decompressor the frame reader,
//! `engine/reader.rs`, inflates incoming messages with, on servers and
//! clients alike) and `write.rs` (the compressor for outgoing ones), with
//! `pool.rs` lending codecs to the sides without context takeover.
//!
//! Compression is opt-in: a handler returns [`CompressionOptions`] from
//! [`WebSocketHandler::compression_options`](crate::WebSocketHandler::compression_options)
//! (Tornado's `get_compression_options`), a client passes them to
//! [`ConnectOptions::compression`](crate::ConnectOptions::compression).
//! Without them nothing of this module runs on a connection.

pub(crate) mod inflate;
mod pool;
mod tuning;
pub(crate) mod write;

/// The extension's name in `Sec-WebSocket-Extensions`.
const NAME: &str = "permessage-deflate";

/// What a server or client accepts for permessage-deflate (RFC 7692).
///
/// "Server" and "client" name the direction as in the RFC: the
/// `server_*` settings bound what the server compresses (and the client
/// must keep to inflate), the `client_*` ones what the client compresses.
///
/// Memory per compressing connection: the compressor keeps a window of
/// `2^max_window_bits` bytes twice over, a chain table of `2^max_window_bits`
/// two-byte entries, a 128 KiB hash table (at any window and memory level)
/// and `7 · 2^(mem_level + 6)` bytes of symbol and output buffers (112 KiB
/// at memory level 8, 896 bytes at 1): about 370 KiB allocated at 15 bits
/// and level 8, about 260 KiB at level 1. The decompressor keeps a window of
/// `2^max_window_bits` bytes plus about 7 KiB, and the codec buffers about
/// 40 KiB while a message is in flight. With no context takeover on a side,
/// that side's state is borrowed from a small per-thread pool for each
/// message and given back after it, so an idle connection holds none of it.
///
/// ```
/// use squall::CompressionOptions;
///
/// let options = CompressionOptions::new()
///     .level(6)
///     .mem_level(4)
///     .server_no_context_takeover(true)
///     .client_max_window_bits(12);
/// assert_eq!(options.get_level(), 6);
/// assert_eq!(options.get_mem_level(), 4);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressionOptions {
    level: u32,
    mem_level: u8,
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: u8,
    client_max_window_bits: u8,
}

impl Default for CompressionOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl CompressionOptions {
    /// Defaults: level 6 and memory level 8 (zlib's defaults, as Tornado),
    /// context takeover on both sides, 15-bit windows (the most the peer
    /// allows).
    pub fn new() -> Self {
        CompressionOptions {
            level: 6,
            mem_level: 8,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }

    /// The deflate level, 0 (store) to 9 (smallest); values above 9 count
    /// as 9. Default: 6.
    pub fn level(mut self, level: u32) -> Self {
        self.level = level.min(9);
        self
    }

    /// zlib's memory level (Tornado's `mem_level`), 1 to 9 (clamped): the
    /// compressor's symbol and output buffers take `7 · 2^(mem_level + 6)`
    /// bytes, 112 KiB at 8, 7 KiB at 4, 896 bytes at 1. A lower level
    /// costs less memory per compressing connection; a message longer than
    /// the buffer holds symbols for is then sent in more deflate blocks,
    /// slightly larger. It only changes what this endpoint sends, so it is
    /// not negotiated. Unlike C zlib, the backend (zlib-rs) keeps its hash
    /// table at 128 KiB at every level. Default: 8.
    pub fn mem_level(mut self, mem_level: u8) -> Self {
        self.mem_level = mem_level.clamp(1, 9);
        self
    }

    /// Asks that the server compress every message on its own (no shared
    /// window between messages), so the server's compressor is dropped
    /// between messages. Default: `false`.
    pub fn server_no_context_takeover(mut self, yes: bool) -> Self {
        self.server_no_context_takeover = yes;
        self
    }

    /// Asks that the client compress every message on its own, so the
    /// server's decompressor is dropped between messages. Default: `false`.
    pub fn client_no_context_takeover(mut self, yes: bool) -> Self {
        self.client_no_context_takeover = yes;
        self
    }

    /// The largest window the server compresses with, 8 to 15 (clamped).
    /// Default: 15. zlib cannot compress with 8 bits; it uses 9, whose
    /// matches never reach back more than 250 bytes, so an 8-bit peer can
    /// inflate them.
    pub fn server_max_window_bits(mut self, bits: u8) -> Self {
        self.server_max_window_bits = bits.clamp(8, 15);
        self
    }

    /// The largest window the client may compress with, 8 to 15 (clamped).
    /// Default: 15. It bounds the server's decompressor memory only when the
    /// client's offer allows it (`client_max_window_bits`, which browsers
    /// send); otherwise the client keeps 15 bits.
    pub fn client_max_window_bits(mut self, bits: u8) -> Self {
        self.client_max_window_bits = bits.clamp(8, 15);
        self
    }

    /// The deflate level.
    pub fn get_level(&self) -> u32 {
        self.level
    }

    /// zlib's memory level.
    pub fn get_mem_level(&self) -> u8 {
        self.mem_level
    }

    /// The offer a client sends: these settings, and
    /// `client_max_window_bits` so the server may bound the client's window.
    pub(crate) fn offer(&self) -> String {
        let mut offer = String::from(NAME);
        if self.server_no_context_takeover {
            offer.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            offer.push_str("; client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            offer.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        if self.client_max_window_bits < 15 {
            offer.push_str(&format!(
                "; client_max_window_bits={}",
                self.client_max_window_bits
            ));
        } else {
            offer.push_str("; client_max_window_bits");
        }
        offer
    }
}

/// One direction of an agreed compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Side {
    /// The compressor is reset after every message.
    pub no_context_takeover: bool,
    /// The window the compressor may use, 8 to 15.
    pub max_window_bits: u8,
}

/// The agreed parameters, from one endpoint's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// What this endpoint compresses with.
    pub ours: Side,
    /// What the peer compresses with (what this endpoint inflates).
    pub theirs: Side,
    /// This endpoint's deflate level.
    pub level: u32,
    /// This endpoint's zlib memory level, 1 to 9.
    pub mem_level: u8,
}

/// What a compressed message depends on when the compressor starts afresh
/// for every message (no context takeover): the level, the memory level
/// (it decides where a long message's deflate blocks end) and the window.
/// Receivers with equal keys can share one compressed frame. Packed in two
/// bytes, as every connection's send queue holds one: the window in bits
/// 0–3, the level in 4–7, the memory level in 8–11, bit 12 always set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SharedKey(std::num::NonZeroU16);

impl SharedKey {
    fn new(level: u32, mem_level: u8, max_window_bits: u8) -> Self {
        let packed = 0x1000
            | u16::from(mem_level.clamp(1, 9)) << 8
            | (level.min(9) as u16) << 4
            | u16::from(max_window_bits & 0xf);
        SharedKey(std::num::NonZeroU16::new(packed).expect("bit 12 is set"))
    }

    pub fn level(self) -> u32 {
        u32::from((self.0.get() >> 4) & 0xf)
    }

    pub fn mem_level(self) -> u8 {
        ((self.0.get() >> 8) & 0xf) as u8
    }

    pub fn max_window_bits(self) -> u8 {
        (self.0.get() & 0xf) as u8
    }
}

impl Agreed {
    /// The key under which this connection's messages can be compressed
    /// once for many receivers; `None` with context takeover, where each
    /// message depends on the ones before it on the same connection.
    pub fn shared_key(&self) -> Option<SharedKey> {
        self.ours
            .no_context_takeover
            .then(|| SharedKey::new(self.level, self.mem_level, self.ours.max_window_bits.max(9)))
    }
}

/// The parameters of one offer or response, as written.
#[derive(Default, Debug, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value.
    client_max_window_bits: Option<Option<u8>>,
}

/// Why an offer cannot be taken as it is.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// The header is not a valid extension list: decline compression.
    Malformed,
    /// An unknown, repeated or out-of-range parameter: decline this offer.
    BadOffer,
}

/// One parameter as written: a name and, unquoted, its value.
type Param<'a> = (&'a str, Option<&'a str>);

/// One extension of a list: its name and its parameters.
type Extension<'a> = (&'a str, Vec<Param<'a>>);

/// Splits a `Sec-WebSocket-Extensions` list (RFC 7692 §5, RFC 6455 §9.1)
/// into extensions, each a name and its parameters (a value unquoted).
fn parse_list(header: &str) -> Result<Vec<Extension<'_>>, Refused> {
    let mut extensions = Vec::new();
    for element in split_outside_quotes(header, ',') {
        let element = element.trim();
        if element.is_empty() {
            // `1#element` allows empty list elements; skip them.
            continue;
        }
        let mut parts = split_outside_quotes(element, ';').into_iter();
        let name = parts.next().unwrap_or_default().trim();
        if !is_token(name) {
            return Err(Refused::Malformed);
        }
        let mut params = Vec::new();
        for param in parts {
            let (key, value) = match param.split_once('=') {
                Some((key, value)) => (key.trim(), Some(unquote(value.trim())?)),
                None => (param.trim(), None),
            };
            if !is_token(key) {
                return Err(Refused::Malformed);
            }
            params.push((key, value));
        }
        extensions.push((name, params));
    }
    Ok(extensions)
}

/// Splits at `separator` except inside a quoted string.
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A parameter value: a token, or a quoted string whose content is a token
/// (RFC 7692 §5 asks that the unquoted value be a token).
fn unquote(value: &str) -> Result<&str, Refused> {
    let inner = match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').ok_or(Refused::Malformed)?,
        None => value,
    };
    if is_token(inner) {
        Ok(inner)
    } else {
        Err(Refused::Malformed)
    }
}

/// An HTTP token (RFC 7230 §3.2.6).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A window size: 8 to 15 in plain digits, no leading zero.
fn window_bits(value: Option<&str>) -> Result<u8, Refused> {
    match value {
        Some(v) if v.len() <= 2 && !v.starts_with('0') && v.bytes().all(|b| b.is_ascii_digit()) => {
            match v.parse::<u8>() {
                Ok(bits @ 8..=15) => Ok(bits),
                _ => Err(Refused::BadOffer),
            }
        }
        _ => Err(Refused::BadOffer),
    }
}

/// The parameters of one permessage-deflate element; any unknown,
/// repeated or invalid parameter refuses it.
fn parse_params(params: &[Param<'_>]) -> Result<Params, Refused> {
    let mut parsed = Params::default();
    let mut seen = [false; 4];
    for (key, value) in params {
        let index = match key.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => {
                parsed.server_no_context_takeover = true;
                0
            }
            "client_no_context_takeover" if value.is_none() => {
                parsed.client_no_context_takeover = true;
                1
            }
            "server_max_window_bits" => {
                parsed.server_max_window_bits = Some(window_bits(*value)?);
                2
            }
            "client_max_window_bits" => {
                parsed.client_max_window_bits = Some(match value {
                    None => None,
                    Some(_) => Some(window_bits(*value)?),
                });
                3
            }
            _ => return Err(Refused::BadOffer),
        };
        if std::mem::replace(&mut seen[index], true) {
            return Err(Refused::BadOffer);
        }
    }
    Ok(parsed)
}

/// The server's side of the negotiation (RFC 7692 §7.1): the first
/// acceptable permessage-deflate offer among the request's
/// `Sec-WebSocket-Extensions` values, with the exact response header.
/// `None` declines compression: no offer, no acceptable offer, or a header
/// that does not parse.
pub(crate) fn accept_offer<'a>(
    headers: impl Iterator<Item = &'a http::HeaderValue>,
    options: &CompressionOptions,
) -> Option<(Agreed, String)> {
    let mut joined = String::new();
    for value in headers {
        let Ok(value) = value.to_str() else {
            return None;
        };
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(value);
    }
    let offers = parse_list(&joined).ok()?;
    offers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(NAME))
        .find_map(|(_, params)| {
            let offer = parse_params(params).ok()?;
            Some(answer(&offer, options))
        })
}

/// What the server agrees to for one valid offer, and its response.
fn answer(offer: &Params, options: &CompressionOptions) -> (Agreed, String) {
    let mut response = String::from(NAME);
    let server_no_context_takeover =
        offer.server_no_context_takeover || options.server_no_context_takeover;
    if server_no_context_takeover {
        response.push_str("; server_no_context_takeover");
    }
    let client_no_context_takeover =
        offer.client_no_context_takeover || options.client_no_context_takeover;
    if client_no_context_takeover {
        // Echoed when offered too, so the client's hint becomes binding and
        // the server may drop its decompressor between messages.
        response.push_str("; client_no_context_takeover");
    }
    // The server may always compress with a smaller window than the client
    // allows; it only says so when the client asked for a bound.
    let server_bits = options
        .server_max_window_bits
        .min(offer.server_max_window_bits.unwrap_or(15));
    if offer.server_max_window_bits.is_some() {
        response.push_str(&format!("; server_max_window_bits={server_bits}"));
    }
    // The client's window can be bounded only if it offered the parameter.
    let client_bits = match offer.client_max_window_bits {
        None => 15,
        Some(offered) => {
            let offered = offered.unwrap_or(15);
            let bits = options.client_max_window_bits.min(offered);
            if options.client_max_window_bits < 15 {
                response.push_str(&format!("; client_max_window_bits={bits}"));
            }
            bits
        }
    };
    let agreed = Agreed {
        ours: Side {
            no_context_takeover: server_no_context_takeover,
            max_window_bits: server_bits,
        },
        theirs: Side {
            no_context_takeover: client_no_context_takeover,
            max_window_bits: client_bits,
        },
        level: options.level,
        mem_level: options.mem_level,
    };
    (agreed, response)
}

/// The client's side: reads the server's `Sec-WebSocket-Extensions` answer
/// to [`CompressionOptions::offer`]. `Ok(None)`: the server declined.
/// `Err`: the server answered with something that was not offered, which
/// fails the connection (RFC 6455 §9.1).
pub(crate) fn read_answer<'a>(
    headers: impl Iterator<Item = &'a http::HeaderValue>,
    options: &CompressionOptions,
) -> Result<Option<Agreed>, String> {
    let mut agreed = None;
    for value in headers {
        let value = value
            .to_str()
            .map_err(|_| "invalid Sec-WebSocket-Extensions".to_owned())?;
        let list =
            parse_list(value).map_err(|_| format!("invalid Sec-WebSocket-Extensions: {value}"))?;
        for (name, params) in list {
            if !name.eq_ignore_ascii_case(NAME) || agreed.is_some() {
                return Err(format!("the server chose an extension not offered: {name}"));
            }
            let params = parse_params(&params)
                .map_err(|_| format!("invalid permessage-deflate answer: {value}"))?;
            let client_bits = match params.client_max_window_bits {
                Some(Some(bits)) => bits,
                Some(None) => return Err("client_max_window_bits without a value".to_owned()),
                None => options.client_max_window_bits,
            };
            let server_bits = params.server_max_window_bits.unwrap_or(15);
            if server_bits > options.server_max_window_bits
                || (options.server_no_context_takeover && !params.server_no_context_takeover)
            {
                return Err(format!("the server did not keep to the offer: {value}"));
            }
            agreed = Some(Agreed {
                ours: Side {
                    no_context_takeover: params.client_no_context_takeover
                        || options.client_no_context_takeover,
                    max_window_bits: client_bits.min(options.client_max_window_bits),
                },
                theirs: Side {
                    no_context_takeover: params.server_no_context_takeover,
                    max_window_bits: server_bits,
                },
                level: options.level,
                mem_level: options.mem_level,
            });
        }
    }
    Ok(agreed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn accept(values: &[&str], options: &CompressionOptions) -> Option<(Agreed, String)> {
        let values: Vec<HeaderValue> = values
            .iter()
            .map(|v| HeaderValue::from_str(v).unwrap())
            .collect();
        accept_offer(values.iter(), options)
    }

    fn response(values: &[&str]) -> Option<String> {
        accept(values, &CompressionOptions::new()).map(|(_, r)| r)
    }

    #[test]
    fn a_plain_offer_gets_a_plain_answer() {
        assert_eq!(
            response(&["permessage-deflate"]).as_deref(),
            Some("permessage-deflate")
        );
        // What browsers send.
        let (agreed, header) = accept(
            &["permessage-deflate; client_max_window_bits"],
            &CompressionOptions::new(),
        )
        .unwrap();
        assert_eq!(header, "permessage-deflate");
        assert_eq!(agreed.theirs.max_window_bits, 15);
        assert!(!agreed.ours.no_context_takeover);
    }

    #[test]
    fn the_server_settings_shape_the_answer() {
        let options = CompressionOptions::new()
            .server_no_context_takeover(true)
            .client_no_context_takeover(true)
            .client_max_window_bits(10)
            .server_max_window_bits(12);
        let (agreed, header) = accept(
            &["permessage-deflate; client_max_window_bits; server_max_window_bits=14"],
            &options,
        )
        .unwrap();
        assert_eq!(
            header,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=12; client_max_window_bits=10"
        );
        assert_eq!(agreed.ours.max_window_bits, 12);
        assert_eq!(agreed.theirs.max_window_bits, 10);
        assert!(agreed.ours.no_context_takeover && agreed.theirs.no_context_takeover);
    }

    #[test]
    fn the_offers_requests_are_kept() {
        let (agreed, header) = accept(
            &["permessage-deflate; server_no_context_takeover; server_max_window_bits=9"],
            &CompressionOptions::new(),
        )
        .unwrap();
        assert_eq!(
            header,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9"
        );
        assert_eq!(agreed.ours.max_window_bits, 9);
        assert!(agreed.ours.no_context_takeover);
        // Without client_max_window_bits in the offer, the client's window
        // cannot be bounded.
        let options = CompressionOptions::new().client_max_window_bits(9);
        let (agreed, header) = accept(&["permessage-deflate"], &options).unwrap();
        assert_eq!(header, "permessage-deflate");
        assert_eq!(agreed.theirs.max_window_bits, 15);
    }

    #[test]
    fn a_bad_offer_falls_back_to_the_next() {
        let offers = [
            "permessage-deflate; unknown_param, permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=\"10\"",
        ];
        let (agreed, header) = accept(
            &offers,
            &CompressionOptions::new().client_max_window_bits(12),
        )
        .unwrap();
        assert_eq!(header, "permessage-deflate; client_max_window_bits=10");
        assert_eq!(agreed.theirs.max_window_bits, 10);
    }

    #[test]
    fn nothing_acceptable_declines() {
        for offers in [
            &["permessage-deflate; bogus"][..],
            &["permessage-deflate; server_max_window_bits"],
            &["permessage-deflate; server_max_window_bits=7"],
            &["permessage-deflate; server_max_window_bits=08"],
            &["permessage-deflate; client_max_window_bits=abc"],
            &["permessage-deflate; server_no_context_takeover=1"],
            &["other-extension"],
            &[""],
        ] {
            assert_eq!(response(offers), None, "{offers:?}");
        }
    }

    #[test]
    fn a_malformed_header_declines_compression() {
        for offers in [
            &["permessage-deflate; a b"][..],
            &["permessage-deflate, ;"],
            &["permessage-deflate; x=\"unterminated"],
            &["permessage-deflate; =1"],
            &["permessage-deflate, bad header; x"],
        ] {
            assert_eq!(response(offers), None, "{offers:?}");
        }
    }

    #[test]
    fn the_client_reads_the_answer() {
        let options = CompressionOptions::new();
        let read = |value: &str| {
            let value = HeaderValue::from_str(value).unwrap();
            read_answer(std::iter::once(&value), &options)
        };
        let agreed =
            read("permessage-deflate; server_no_context_takeover; client_max_window_bits=9")
                .unwrap()
                .unwrap();
        assert_eq!(agreed.ours.max_window_bits, 9);
        assert!(agreed.theirs.no_context_takeover);
        assert!(read("x-other").is_err());
        assert!(read("permessage-deflate; nope").is_err());
        assert!(read("permessage-deflate, permessage-deflate").is_err());
        assert_eq!(read_answer(std::iter::empty(), &options), Ok(None));
    }

    #[test]
    fn the_client_offer_lists_its_settings() {
        assert_eq!(
            CompressionOptions::new().offer(),
            "permessage-deflate; client_max_window_bits"
        );
        assert_eq!(
            CompressionOptions::new()
                .client_no_context_takeover(true)
                .server_max_window_bits(10)
                .client_max_window_bits(11)
                .offer(),
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=11"
        );
    }

    #[test]
    fn the_memory_level_is_clamped_and_not_negotiated() {
        assert_eq!(CompressionOptions::new().get_mem_level(), 8);
        assert_eq!(CompressionOptions::new().mem_level(0).get_mem_level(), 1);
        assert_eq!(CompressionOptions::new().mem_level(200).get_mem_level(), 9);
        let options = CompressionOptions::new()
            .mem_level(2)
            .server_no_context_takeover(true);
        let (agreed, header) = accept(&["permessage-deflate"], &options).unwrap();
        assert_eq!(header, "permessage-deflate; server_no_context_takeover");
        assert_eq!(agreed.mem_level, 2);
        assert_eq!(
            options.offer(),
            CompressionOptions::new()
                .server_no_context_takeover(true)
                .offer()
        );
        let answer = HeaderValue::from_static("permessage-deflate; server_no_context_takeover");
        let client = read_answer(std::iter::once(&answer), &options)
            .unwrap()
            .unwrap();
        assert_eq!(client.mem_level, 2);
    }

    #[test]
    fn the_shared_key_keeps_the_memory_level_apart() {
        let options = CompressionOptions::new()
            .level(7)
            .server_no_context_takeover(true)
            .server_max_window_bits(8);
        let key = |mem_level| {
            accept(
                &["permessage-deflate"],
                &options.clone().mem_level(mem_level),
            )
            .unwrap()
            .0
            .shared_key()
            .unwrap()
        };
        for mem_level in 1..=9 {
            let k = key(mem_level);
            assert_eq!(
                (k.level(), k.mem_level(), k.max_window_bits()),
                (7, mem_level, 9)
            );
        }
        assert_ne!(key(1), key(8));
    }
}
