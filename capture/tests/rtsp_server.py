"""An RTSP camera for capture's tests: GStreamer's RTSP server sending x264 of a moving test
pattern at rtsp://127.0.0.1:PORT/test over RTP, and with --record the very H.264 it packetises,
as an Annex B file, so a test can compare what reached the ring with what the camera encoded.
With --video jpeg it sends JPEG instead (RFC 2435), a camera that has no H.264 to offer.

Run with Debian's python3 (python3-gi, gir1.2-gst-rtsp-server-1.0, the x264 of
gstreamer1.0-plugins-ugly). Prints "ready" once it listens; runs until killed.
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def launch_line(video):
    if video == "jpeg":
        return (
            "( videotestsrc is-live=true ! video/x-raw,format=I420,width=320,height=240,framerate=15/1"
            " ! jpegenc ! rtpjpegpay name=pay0 pt=26 )"
        )
    # The encoder's output is an Annex B byte stream cut into access units, so the parameter
    # sets travel in-band before every keyframe and what the payloader takes is a byte stream.
    return (
        "( videotestsrc is-live=true pattern=ball"
        " ! video/x-raw,width=320,height=240,framerate=15/1"
        " ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15"
        " ! video/x-h264,stream-format=byte-stream,alignment=au"
        " ! rtph264pay name=pay0 pt=96 )"
    )


def recorder(path):
    """A media-configure handler that appends every buffer the payloader takes to `path`.

    A probe rather than a tee in the pipeline: with a tee, GStreamer 1.22's RTSP server
    sometimes aborts on a PLAY that comes soon after SETUP (gst_rtsp_media_get_rates)."""
    out = open(path, "wb", buffering=0)

    def write(_pad, info):
        buffer = info.get_buffer()
        mapped, data = buffer.map(Gst.MapFlags.READ)
        if mapped:
            out.write(bytes(data.data))
            buffer.unmap(data)
        return Gst.PadProbeReturn.OK

    def configure(_factory, media):
        payloader = media.get_element().get_by_name("pay0")
        payloader.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, write)

    return configure


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--video", choices=["h264", "jpeg"], default="h264")
    parser.add_argument("--record", help="write the H.264 sent to this file")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args.video))
    if args.record:
        factory.connect("media-configure", recorder(args.record))
    # One encoder for every client, so the recording is what each of them receives.
    factory.set_shared(True)
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on port {args.port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
