//! `--source rtsp://… --codec h264`: the camera's own H.264, passed through without decoding.
//! The RTSP client is retina (RTP interleaved on the RTSP connection over TCP); it runs on a
//! current-thread tokio runtime that lives in the stream and is driven only while the source
//! thread waits for the next frame, so there is no second thread to coordinate. Each video frame
//! retina depacketises is one access unit, in Annex B form with its SPS and PPS before every
//! keyframe; capture's H.264 pipeline then applies the same rules as for every H.264 source.
//!
//! Credentials come from the URL's `user:password@` and are handed to retina apart from the
//! URL, so no message of retina's or ours can name them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use percent_encoding::percent_decode_str;
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionGroup, SessionOptions, SetupOptions,
    Transport,
};
use retina::codec::{h26x, CodecItem, FrameFormat, ParameterSetInsertion, VideoFrame};
use ringbuf::h264::{nal_type, nal_units, NAL_ACCESS_UNIT_DELIMITER};
use tokio::runtime::Runtime;
use tracing::warn;
use url::Url;

use super::{now_wall, Captured, FrameStream, Pulled, Source, SourceOptions, POLL};
use crate::cli::redact;
use crate::SourceError;

/// Connecting, DESCRIBE, SETUP and PLAY together may take this long (a host that drops
/// packets would otherwise hold a TCP connect for minutes).
const CONNECT_LIMIT: Duration = Duration::from_secs(10);
/// A camera that sends no video for this long (frozen, or a connection that died silently) is
/// reconnected.
const SILENT_LIMIT: Duration = Duration::from_secs(15);
/// How long closing a stream waits for retina's TEARDOWN, within the time capture gives its
/// source thread to stop.
const TEARDOWN_LIMIT: Duration = Duration::from_millis(200);

/// Annex B, as the ring holds it, with the parameter sets before every keyframe: cameras often
/// send them only in the SDP, and the pipeline learns them from the access units.
const ANNEX_B_WITH_PARAMETER_SETS: FrameFormat = FrameFormat {
    h26x_framing: h26x::Framing::AnnexB,
    parameter_set_insertion: ParameterSetInsertion::EachKeyFrame,
    aac_framing: FrameFormat::SIMPLE.aac_framing,
};

/// An rtsp:// URL taken apart for retina, which refuses credentials inside the URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RtspTarget {
    pub url: Url,
    pub credentials: Option<Credentials>,
}

/// Written by hand: retina's `Credentials` would print the password.
impl std::fmt::Debug for RtspTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self.credentials.as_ref().map(|c| c.username.as_str());
        f.debug_struct("RtspTarget")
            .field("url", &self.url.as_str())
            .field("user", &user)
            .finish_non_exhaustive()
    }
}

impl RtspTarget {
    pub fn parse(url: &str) -> Result<RtspTarget, SourceError> {
        let bad = |reason: &str| SourceError::BadRtspUrl {
            url: redact(url),
            reason: reason.to_owned(),
        };
        let mut parsed = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if parsed.scheme() != "rtsp" {
            return Err(bad("the scheme must be rtsp"));
        }
        if parsed.host().is_none() {
            return Err(bad("it names no host"));
        }
        let credentials = match (parsed.username(), parsed.password()) {
            ("", None) => None,
            (username, password) => Some(Credentials {
                username: percent_decoded(username).ok_or_else(|| bad("the user is not UTF-8"))?,
                password: percent_decoded(password.unwrap_or(""))
                    .ok_or_else(|| bad("the password is not UTF-8"))?,
            }),
        };
        parsed
            .set_username("")
            .and_then(|()| parsed.set_password(None))
            .map_err(|()| bad("its credentials cannot be taken out"))?;
        Ok(RtspTarget {
            url: parsed,
            credentials,
        })
    }
}

/// A URL's userinfo part as the text it encodes.
fn percent_decoded(part: &str) -> Option<String> {
    percent_decode_str(part)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

/// Which of the streams a camera offers (as `(media, encoding)` pairs from its SDP: `video`,
/// `h264`) capture reads: the first H.264 video.
pub fn h264_stream<'a>(
    offered: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> Result<usize, SourceError> {
    let is_h264 = |(media, encoding): (&str, &str)| {
        media.eq_ignore_ascii_case("video") && encoding.eq_ignore_ascii_case("h264")
    };
    offered
        .clone()
        .position(is_h264)
        .ok_or_else(|| SourceError::NotH264 {
            offered: describe_offer(offered),
        })
}

/// "video/h265, audio/pcma", or "no streams at all".
fn describe_offer<'a>(offered: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let streams: Vec<String> = offered
        .map(|(media, encoding)| format!("{media}/{encoding}"))
        .collect();
    if streams.is_empty() {
        "no streams at all".into()
    } else {
        streams.join(", ")
    }
}

/// `unit` with its access unit delimiter first, where H.264 7.4.1.2.3 puts it: retina places
/// the parameter sets it inserts before every other NAL unit, delimiter included.
fn delimiter_first(unit: Vec<u8>) -> Vec<u8> {
    let is_delimiter = |nal: &[u8]| nal_type(nal) == Some(NAL_ACCESS_UNIT_DELIMITER);
    let in_place = nal_units(&unit).next().is_none_or(is_delimiter);
    if in_place || !nal_units(&unit).any(is_delimiter) {
        return unit;
    }
    let mut out = Vec::with_capacity(unit.len());
    let delimiters = nal_units(&unit).filter(|nal| is_delimiter(nal));
    for nal in delimiters.chain(nal_units(&unit).filter(|nal| !is_delimiter(nal))) {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
    }
    out
}

pub struct RtspSource {
    url: String,
    /// `--fps`: the camera's rate as the operator states it, where its stream may not.
    fps: Option<u32>,
}

impl RtspSource {
    pub fn new(url: String, options: &SourceOptions) -> RtspSource {
        if let Some(size) = options.size {
            warn!("--size {size} not applied: the camera's H.264 is passed on as it comes");
        }
        RtspSource {
            url,
            fps: options.fps,
        }
    }
}

impl Source for RtspSource {
    fn describe(&self) -> String {
        format!("H.264 from RTSP camera {}", redact(&self.url))
    }

    fn preflight(&self) -> Result<(), SourceError> {
        RtspTarget::parse(&self.url).map(drop)
    }

    fn nominal_fps(&self) -> Option<u32> {
        self.fps
    }

    fn open(&mut self) -> Result<Box<dyn FrameStream>, SourceError> {
        let target = RtspTarget::parse(&self.url)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SourceError::io("starting the RTSP client"))?;
        let group = Arc::new(SessionGroup::default());
        let playing = runtime.block_on(async {
            tokio::time::timeout(CONNECT_LIMIT, play(&target, Arc::clone(&group)))
                .await
                .map_err(|_| {
                    SourceError::Protocol(format!(
                        "the RTSP camera did not start playing within {} s",
                        CONNECT_LIMIT.as_secs()
                    ))
                })?
        });
        let playing = match playing {
            Ok(playing) => playing,
            Err(e) => {
                // Not a plain drop, which waits for the blocking pool: a host name lookup
                // still hanging there would hold the source thread.
                runtime.shutdown_background();
                return Err(e);
            }
        };
        Ok(Box::new(RtspStream {
            playing: Some(playing),
            runtime: Some(runtime),
            group,
            last_video: Instant::now(),
            damaged: false,
        }))
    }
}

/// A session that plays the camera's H.264 stream.
struct Playing {
    frames: Demuxed,
    stream_id: usize,
}

/// DESCRIBE, SETUP of the first H.264 video stream, PLAY.
async fn play(target: &RtspTarget, group: Arc<SessionGroup>) -> Result<Playing, SourceError> {
    let options = SessionOptions::default()
        .creds(target.credentials.clone())
        .session_group(group)
        .user_agent(format!("ringcast-capture {}", env!("CARGO_PKG_VERSION")));
    let mut session = Session::describe(target.url.clone(), options).await?;
    let stream_id = h264_stream(
        session
            .streams()
            .iter()
            .map(|stream| (stream.media(), stream.encoding_name())),
    )?;
    session
        .setup(
            stream_id,
            SetupOptions::default()
                .transport(Transport::default())
                .frame_format(ANNEX_B_WITH_PARAMETER_SETS),
        )
        .await?;
    let frames = session.play(PlayOptions::default()).await?.demuxed()?;
    Ok(Playing { frames, stream_id })
}

struct RtspStream {
    /// `None` only while the stream is dropped: the session must go before the runtime it
    /// runs on.
    playing: Option<Playing>,
    /// `None` only while the stream is dropped (shut down without waiting, as in `open`).
    runtime: Option<Runtime>,
    group: Arc<SessionGroup>,
    last_video: Instant,
    /// RTP packets were lost: frames until the next keyframe would not decode.
    damaged: bool,
}

impl RtspStream {
    fn accept(&mut self, frame: VideoFrame) -> Pulled {
        self.last_video = Instant::now();
        if frame.loss() > 0 {
            self.damaged = true;
        }
        if self.damaged && !frame.is_random_access_point() {
            return Pulled::Broken {
                bytes: frame.data().len(),
            };
        }
        self.damaged = false;
        Pulled::Frame(Captured {
            data: delimiter_first(frame.into_data()),
            capture: now_wall(),
        })
    }

    fn check_silence(&self) -> Result<Option<Pulled>, SourceError> {
        if self.last_video.elapsed() < SILENT_LIMIT {
            return Ok(None);
        }
        Err(SourceError::Protocol(format!(
            "no video from the RTSP camera for {} s",
            SILENT_LIMIT.as_secs()
        )))
    }
}

impl FrameStream for RtspStream {
    fn next_frame(&mut self) -> Result<Option<Pulled>, SourceError> {
        let (Some(playing), Some(runtime)) = (self.playing.as_mut(), self.runtime.as_ref()) else {
            return Err(SourceError::Protocol("the RTSP session is closed".into()));
        };
        let stream_id = playing.stream_id;
        // The timer is made inside `block_on`, where the runtime's context is.
        let item =
            runtime.block_on(async { tokio::time::timeout(POLL, playing.frames.next()).await });
        match item {
            Err(_elapsed) => self.check_silence(),
            Ok(None) => Err(SourceError::Protocol(
                "the RTSP camera closed the connection".into(),
            )),
            Ok(Some(Err(e))) => Err(e.into()),
            Ok(Some(Ok(CodecItem::VideoFrame(frame)))) if frame.stream_id() == stream_id => {
                Ok(Some(self.accept(frame)))
            }
            Ok(Some(Ok(_other))) => self.check_silence(),
        }
    }
}

impl Drop for RtspStream {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        // retina sends TEARDOWN from a task it spawns when the session is dropped.
        let context = runtime.enter();
        drop(self.playing.take());
        let _ = runtime.block_on(async {
            tokio::time::timeout(TEARDOWN_LIMIT, self.group.await_teardown()).await
        });
        drop(context);
        runtime.shutdown_background();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_taken_out_of_the_url_and_decoded() {
        let target = RtspTarget::parse("rtsp://admin:p%40ss%3Aword@10.0.0.5:554/stream1").unwrap();
        assert_eq!(target.url.as_str(), "rtsp://10.0.0.5:554/stream1");
        assert_eq!(
            target.credentials,
            Some(Credentials {
                username: "admin".into(),
                password: "p@ss:word".into(),
            })
        );
        let user_only = RtspTarget::parse("rtsp://viewer@cam/1").unwrap();
        assert_eq!(user_only.credentials.unwrap().password, "");
        assert_eq!(RtspTarget::parse("RTSP://cam/1").unwrap().credentials, None);
    }

    #[test]
    fn a_bad_url_is_refused_without_its_password() {
        for url in [
            "rtsp://u:secret@[::1/x",
            "rtsp://u:secret@/x",
            "rtsp://u:%ff@cam/",
        ] {
            let refused = RtspTarget::parse(url).unwrap_err().to_string();
            assert!(!refused.contains("secret"), "{refused}");
            assert!(refused.contains("not a usable rtsp:// URL"), "{refused}");
        }
    }

    #[test]
    fn the_first_h264_video_stream_is_chosen() {
        let offered = [("audio", "pcma"), ("video", "jpeg"), ("video", "H264")];
        assert_eq!(h264_stream(offered.into_iter()).unwrap(), 2);
    }

    #[test]
    fn a_camera_without_h264_is_refused_naming_what_it_offers() {
        let offered = [("video", "h265"), ("audio", "mpeg4-generic")];
        let refused = h264_stream(offered.into_iter()).unwrap_err().to_string();
        assert!(
            refused.contains("(it offers video/h265, audio/mpeg4-generic)"),
            "{refused}"
        );
        assert!(refused.contains("--codec mjpeg"), "{refused}");
        let nothing = h264_stream(std::iter::empty()).unwrap_err().to_string();
        assert!(nothing.contains("no streams at all"), "{nothing}");
    }

    fn unit(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|nal| [&[0, 0, 0, 1], *nal])
            .flatten()
            .copied()
            .collect()
    }

    #[test]
    fn the_access_unit_delimiter_goes_before_inserted_parameter_sets() {
        const AUD: &[u8] = &[0x09, 0xF0];
        const SPS: &[u8] = &[0x67, 0x42];
        const PPS: &[u8] = &[0x68, 0xCE];
        const IDR: &[u8] = &[0x65, 0x88];
        assert_eq!(
            delimiter_first(unit(&[SPS, PPS, AUD, IDR])),
            unit(&[AUD, SPS, PPS, IDR])
        );
        // Units already in order, or without a delimiter, are left as they are.
        let mut three_byte = vec![0, 0, 1];
        three_byte.extend_from_slice(AUD);
        three_byte.extend_from_slice(&unit(&[IDR]));
        assert_eq!(delimiter_first(three_byte.clone()), three_byte);
        assert_eq!(delimiter_first(unit(&[SPS, IDR])), unit(&[SPS, IDR]));
    }
}
