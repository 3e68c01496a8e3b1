//! ringcast-capture: takes frames from one camera source and publishes them as JPEG into that
//! camera's ring (or pushes them to a remote server's ingest route).
