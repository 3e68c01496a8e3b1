//! `GET /`: a plain page with one live `<img>` per camera, until the web viewer is built.

use crate::hub::Camera;
use std::rc::Rc;

pub fn index(cameras: &[Rc<Camera>], token: Option<&str>) -> String {
    let suffix = token
        .map(|t| {
            format!(
                "?token={}",
                form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>()
            )
        })
        .unwrap_or_default();
    let mut body = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>ringcast</title>\
         <style>body{font-family:sans-serif;background:#111;color:#eee}\
         figure{display:inline-block;margin:8px}img{max-width:640px;background:#222}</style>\
         </head><body><h1>ringcast</h1>\n",
    );
    if cameras.is_empty() {
        body.push_str("<p>No cameras yet.</p>\n");
    }
    // Camera names are [a-z0-9_-], so they need no escaping in HTML or URLs.
    for camera in cameras {
        let id = &camera.id;
        body.push_str(&format!(
            "<figure><img src=\"/stream/{id}.mjpg{suffix}\" alt=\"{id}\" onload=\"showSize(this)\">\
             <figcaption>{id} ({}<span class=\"size\"></span>)</figcaption></figure>\n",
            camera.state().as_str()
        ));
    }
    // The picture size, once the first frame has arrived, tells a person the stream is live.
    body.push_str(
        "<script>function showSize(img){img.parentElement.querySelector('.size').textContent=\
         ', '+img.naturalWidth+'x'+img.naturalHeight}</script>\n</body></html>\n",
    );
    body
}
