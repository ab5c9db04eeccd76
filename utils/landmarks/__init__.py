"""Face detection and landmarks: backends (dlib, face-alignment, MediaPipe's mesh), tracking over
video frames, temporal filters, measured detector noise, drawing."""
