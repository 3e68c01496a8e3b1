//! ringcast-server: maps every camera's ring and serves its frames to viewers over WebSocket and
//! MJPEG-over-HTTP; several worker processes share one port.
