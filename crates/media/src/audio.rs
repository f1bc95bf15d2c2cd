//! Audio sources: 8 kHz mono 16-bit clips, the built-in music on hold (synthesised, no
//! asset files), and a WAV reader.

use std::f32::consts::TAU;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// The only sample rate the media adapter plays.
pub const SAMPLE_RATE: u32 = 8000;
/// Largest WAV file we load (an hour of 8 kHz 16-bit audio is 57.6 MB).
pub const MAX_WAV_BYTES: u64 = 64 * 1024 * 1024;

/// Why an audio source cannot be played.
#[derive(Debug, Error)]
pub enum AudioError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Larger than [`MAX_WAV_BYTES`].
    #[error("{path}: file too large ({size} bytes)")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Not a RIFF/WAVE file, or a chunk is cut short.
    #[error("not a WAV file: {0}")]
    NotWav(&'static str),
    /// A WAV file in a format we do not play.
    #[error(
        "unsupported WAV format (tag {format_tag}, {channels} channels, {sample_rate} Hz, \
         {bits} bits): need 8 kHz 16-bit PCM mono"
    )]
    Unsupported {
        /// WAVE format tag (1 = PCM).
        format_tag: u16,
        /// Channels.
        channels: u16,
        /// Sample rate.
        sample_rate: u32,
        /// Bits per sample.
        bits: u16,
    },
    /// No samples.
    #[error("WAV file has no audio")]
    Empty,
    /// Prompt names are plain file stems: letters, digits, `-`, `_`, `.`, not starting with `.`.
    #[error("invalid prompt name {0:?}")]
    BadPromptName(String),
    /// A prompt was requested but no prompt directory is configured.
    #[error("no prompts directory configured")]
    NoPromptsDir,
}

/// An immutable, cheaply cloned 8 kHz mono clip.
#[derive(Clone, PartialEq, Eq)]
pub struct AudioClip {
    samples: Arc<[i16]>,
}

impl std::fmt::Debug for AudioClip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioClip")
            .field("samples", &self.samples.len())
            .finish()
    }
}

impl AudioClip {
    /// A clip of 8 kHz samples.
    pub fn from_samples(samples: Vec<i16>) -> Self {
        AudioClip {
            samples: samples.into(),
        }
    }

    /// The samples.
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the clip has no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Play time.
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.samples.len() as u64 * 1_000_000 / u64::from(SAMPLE_RATE))
    }
}

fn midi_hz(note: i32) -> f32 {
    440.0 * 2f32.powf((note as f32 - 69.0) / 12.0)
}

/// The built-in music on hold: an 8-second loop (C – Am – F – G, 120 bpm) of an
/// arpeggiated bell-like melody over a soft pad, synthesised at 8 kHz. The loop is
/// seamless: every note and pad chord fades in and out, and the length is a whole number
/// of 20 ms frames.
pub fn builtin_music() -> AudioClip {
    const BAR: usize = 2 * SAMPLE_RATE as usize; // 4 beats at 120 bpm
    const EIGHTH: usize = BAR / 8;
    // Chord tones (MIDI), root position with the octave on top.
    const CHORDS: [[i32; 4]; 4] = [
        [60, 64, 67, 72], // C
        [57, 60, 64, 69], // Am
        [53, 57, 60, 65], // F
        [55, 59, 62, 67], // G
    ];
    const PATTERN: [usize; 8] = [0, 1, 2, 3, 2, 1, 2, 3];
    let sr = SAMPLE_RATE as f32;
    let mut out = vec![0f32; BAR * CHORDS.len()];
    for (bar, chord) in CHORDS.iter().enumerate() {
        let start = bar * BAR;
        // Pad: root and fifth, a soft sustained chord with 30 ms fades.
        let fade = (0.03 * sr) as usize;
        for (k, note) in [chord[0], chord[2]].iter().enumerate() {
            let f = midi_hz(*note);
            for i in 0..BAR {
                let env = (i.min(BAR - 1 - i) as f32 / fade as f32).min(1.0);
                let t = i as f32 / sr;
                out[start + i] += 0.07 / (k as f32 + 1.0) * env * (TAU * f * t).sin();
            }
        }
        // Melody: eighth notes an octave up, 5 ms attack and exponential decay.
        for (step, idx) in PATTERN.iter().enumerate() {
            let f = midi_hz(chord[*idx] + 12);
            let s0 = start + step * EIGHTH;
            let attack = (0.005 * sr) as usize;
            for i in 0..EIGHTH {
                let t = i as f32 / sr;
                let env = (i as f32 / attack as f32).min(1.0)
                    * (-t * 9.0).exp()
                    * ((EIGHTH - 1 - i) as f32 / attack as f32).min(1.0);
                let tone = (TAU * f * t).sin() + 0.25 * (TAU * 2.0 * f * t).sin();
                out[s0 + i] += 0.22 * env * tone;
            }
        }
    }
    let samples = out
        .iter()
        .map(|s| (s * 32767.0).clamp(-32768.0, 32767.0) as i16)
        .collect();
    AudioClip::from_samples(samples)
}

fn u16_le(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_le(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses a WAV file held in memory: RIFF/WAVE with a PCM (or WAVE_FORMAT_EXTENSIBLE
/// PCM) `fmt ` chunk, 8000 Hz, 16 bits, mono. Unknown chunks are skipped; a `data` chunk
/// whose declared size runs past the end of the file (as streaming writers leave it) is
/// read up to the end.
pub fn parse_wav(bytes: &[u8]) -> Result<AudioClip, AudioError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" {
        return Err(AudioError::NotWav("no RIFF header"));
    }
    if &bytes[8..12] != b"WAVE" {
        return Err(AudioError::NotWav("RIFF type is not WAVE"));
    }
    let mut fmt: Option<&[u8]> = None;
    let mut data: Option<&[u8]> = None;
    let mut pos = 12usize;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32_le(bytes, pos + 4).ok_or(AudioError::NotWav("truncated chunk"))? as usize;
        let body = pos + 8;
        let end = body.saturating_add(size);
        match id {
            b"fmt " => {
                fmt = Some(
                    bytes
                        .get(body..end)
                        .ok_or(AudioError::NotWav("truncated fmt chunk"))?,
                );
            }
            b"data" => {
                data = Some(&bytes[body..end.min(bytes.len())]);
                if fmt.is_some() {
                    break;
                }
            }
            _ => {}
        }
        // Chunks are word-aligned.
        pos = end.saturating_add(size & 1);
    }
    let fmt = fmt.ok_or(AudioError::NotWav("no fmt chunk"))?;
    let data = data.ok_or(AudioError::NotWav("no data chunk"))?;
    let short = || AudioError::NotWav("fmt chunk too short");
    let mut format_tag = u16_le(fmt, 0).ok_or_else(short)?;
    let channels = u16_le(fmt, 2).ok_or_else(short)?;
    let sample_rate = u32_le(fmt, 4).ok_or_else(short)?;
    let bits = u16_le(fmt, 14).ok_or_else(short)?;
    if format_tag == 0xfffe {
        // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the real format tag.
        format_tag = u16_le(fmt, 24).unwrap_or(0xfffe);
    }
    if format_tag != 1 || channels != 1 || sample_rate != SAMPLE_RATE || bits != 16 {
        return Err(AudioError::Unsupported {
            format_tag,
            channels,
            sample_rate,
            bits,
        });
    }
    let samples: Vec<i16> = data
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    if samples.is_empty() {
        return Err(AudioError::Empty);
    }
    Ok(AudioClip::from_samples(samples))
}

/// Reads and parses a WAV file (see [`parse_wav`]). Blocking: call it from
/// `spawn_blocking` in async code.
pub fn load_wav(path: &Path) -> Result<AudioClip, AudioError> {
    let io = |source| AudioError::Io {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_WAV_BYTES {
        return Err(AudioError::TooLarge {
            path: path.to_owned(),
            size,
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    parse_wav(&bytes)
}

/// The file a prompt name resolves to: `<dir>/<name>.wav`. Names are plain file stems
/// (letters, digits, `-`, `_`, `.`; not empty, not starting with `.`), so a name can
/// never escape the directory.
pub fn prompt_path(dir: Option<&Path>, name: &str) -> Result<PathBuf, AudioError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(AudioError::BadPromptName(name.to_owned()));
    }
    let dir = dir.ok_or(AudioError::NoPromptsDir)?;
    Ok(dir.join(format!("{name}.wav")))
}

/// Writes `samples` as an 8 kHz 16-bit PCM mono WAV file image (useful for tests and
/// tools).
pub fn wav_bytes(samples: &[i16]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut v = Vec::with_capacity(44 + samples.len() * 2);
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data_len).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes()); // PCM
    v.extend_from_slice(&1u16.to_le_bytes()); // mono
    v.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    v.extend_from_slice(&(SAMPLE_RATE * 2).to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        v.extend_from_slice(&s.to_le_bytes());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_music_is_a_loud_enough_seamless_loop() {
        let m = builtin_music();
        assert_eq!(m.len(), 64_000);
        assert_eq!(m.len() % 160, 0);
        assert_eq!(m.duration(), Duration::from_secs(8));
        let peak = m.samples().iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((4000..32000).contains(&peak), "peak {peak}");
        let rms = (m
            .samples()
            .iter()
            .map(|s| f64::from(*s).powi(2))
            .sum::<f64>()
            / m.len() as f64)
            .sqrt();
        assert!(rms > 1000.0, "rms {rms}");
        // Seamless: both ends are near silence.
        assert!(m.samples()[0].abs() < 200 && m.samples()[m.len() - 1].abs() < 200);
    }

    #[test]
    fn wav_round_trip_and_extras() {
        let samples: Vec<i16> = (0..800).map(|i| (i * 37 % 2000) as i16 - 1000).collect();
        let w = wav_bytes(&samples);
        assert_eq!(parse_wav(&w).unwrap().samples(), &samples[..]);

        // An unknown chunk (odd-sized, padded) before fmt, and a data size past the end.
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF\0\0\0\0WAVE");
        v.extend_from_slice(b"LIST\x03\0\0\0abc\0");
        v.extend_from_slice(&w[12..40]);
        v.extend_from_slice(&u32::MAX.to_le_bytes());
        v.extend_from_slice(&w[44..]);
        assert_eq!(parse_wav(&v).unwrap().len(), 800);
    }

    #[test]
    fn wav_rejections() {
        assert!(matches!(parse_wav(b""), Err(AudioError::NotWav(_))));
        assert!(matches!(
            parse_wav(b"RIFF\0\0\0\0AVI "),
            Err(AudioError::NotWav(_))
        ));
        assert!(matches!(
            parse_wav(b"RIFF\0\0\0\0WAVE"),
            Err(AudioError::NotWav(_))
        ));
        let mut w = wav_bytes(&[1, 2, 3]);
        w[24..28].copy_from_slice(&16000u32.to_le_bytes());
        assert!(matches!(
            parse_wav(&w),
            Err(AudioError::Unsupported {
                sample_rate: 16000,
                ..
            })
        ));
        let mut w = wav_bytes(&[1, 2, 3]);
        w[22] = 2; // stereo
        assert!(matches!(
            parse_wav(&w),
            Err(AudioError::Unsupported { channels: 2, .. })
        ));
        let mut w = wav_bytes(&[1, 2, 3]);
        w[20] = 7; // mu-law
        assert!(matches!(
            parse_wav(&w),
            Err(AudioError::Unsupported { format_tag: 7, .. })
        ));
        assert!(matches!(parse_wav(&wav_bytes(&[])), Err(AudioError::Empty)));
        let w = wav_bytes(&[1, 2, 3]);
        assert!(matches!(parse_wav(&w[..30]), Err(AudioError::NotWav(_))));
        // Every prefix and some corruption: errors, never panics.
        for n in 0..w.len() {
            let _ = parse_wav(&w[..n]);
            let mut c = w.clone();
            c[n] ^= 0xff;
            let _ = parse_wav(&c);
        }
    }

    #[test]
    fn prompt_names() {
        let dir = Path::new("/p");
        assert_eq!(
            prompt_path(Some(dir), "digit-3").unwrap(),
            Path::new("/p/digit-3.wav")
        );
        for bad in ["", "../etc/passwd", "a/b", ".hidden", "a b", "x\\y"] {
            assert!(matches!(
                prompt_path(Some(dir), bad),
                Err(AudioError::BadPromptName(_))
            ));
        }
        assert!(matches!(
            prompt_path(None, "hello"),
            Err(AudioError::NoPromptsDir)
        ));
    }

    #[test]
    fn missing_file_is_an_io_error() {
        assert!(matches!(
            load_wav(Path::new("/nonexistent/call-engine/x.wav")),
            Err(AudioError::Io { .. })
        ));
    }
}
