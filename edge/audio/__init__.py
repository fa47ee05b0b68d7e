"""Audio for the voice assistant: 16 kHz mono float32 in, speech out.

capture.py   AudioSource: MicrophoneSource (sounddevice), ArraySource, FileSource
devices.py   listing and choosing PortAudio devices
vad.py       Endpointer (hands-free; energy or the micro VAD) and PushToTalk -> Clip, at most 30 s each
wake.py      the wake word (openWakeWord); cleanup.py WebRTC noise suppression and gain for a live mic
files.py     WAV/FLAC/MP3 -> float32 mono 16 kHz; resample.py does the rate conversion (soxr)
tts.py       SentenceSplitter, Piper (in-process)/espeak-ng/none backends, Speaker (with barge-in stop)
playback.py  AudioSink: SoundDeviceSink, NullSink
(clips go into Gemma through the engine: edge/model/engine/media.py)
"""
