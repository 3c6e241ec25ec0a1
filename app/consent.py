"""The consent notice a student reads before the camera starts; versioned so a join records which."""

from __future__ import annotations

# Bump the version whenever the text changes in substance: each student row stores the version it
# accepted, and a join that names an older version is refused so the student reads the new text.
CONSENT_VERSION = "2026-12-6a"  # a: what "facing the screen" observes

# One text for every policy mode: the join page shows, next to it, which mode this school has set.
# Plain text, which the join page (web/static/js/student.js noticeNodes) turns into DOM nodes,
# never HTML: blocks separated by a blank line; a block's first line is its heading; "- " starts
# a list item and an indented line continues it; other lines run on into one paragraph.
CONSENT_TEXT = """\
What happens when you join
While the camera is on, your browser sends this school's ClassPulse server one of two things
(about two times a second); the page shows you which, all the time:
- On-device detection: your browser finds your face itself, and only the position of each face
  (a box) and a small grey picture of each face (64×64 pixels) leave your device. When the
  school's setting is "Off", only the boxes leave it. The camera picture itself is not sent.
- Camera frames: small still images from your webcam (at most 320×240). This is sent instead
  when the school uses it, or when your device is too slow for on-device detection or your
  browser cannot run it (the page then says so).

What the server does with them
- It uses the face to tell whether you are present. Depending on the school's setting (shown on
  this page), it may also estimate one of seven expressions (angry, disgust, fear, happy, sad,
  surprise, neutral). It does not recognise who you are: you are identified only by the display
  name you type here.
- Only when the school has switched on "Facing the screen" (shown on this page): it also reads
  the orientation of your head from the position of your eyes, nose, mouth and ears, that is,
  whether you face the screen or turn away, and for how long. This is a physical observation:
  no expression and no emotion is read from it, and it is not a judgement of your attention,
  interest or effort (you may be reading notes, writing or thinking while looking away).
- Images and face pictures are analysed in memory and deleted within seconds, as soon as they
  are analysed. They are never kept, never stored in the database and never shown to anyone (the
  server's queue may hold one on disk for a few seconds until it is analysed and deleted). Only
  numbers (whether a face was seen and, where the setting allows, which expression and how
  confident, and whether you faced the screen) are kept, grouped in short time periods, and deleted automatically after the
  school's retention period.

Who sees what, by the school's setting
- "Per student": your teacher sees your display name, whether your camera is on, and your
  current estimated expression with its confidence, live during the class, plus a timeline.
- "Class only": your teacher sees whether you are present; expressions are counted only for the
  whole class, and only when enough students are present. No expression is kept for you.
- "Off": no expression is estimated at all; your teacher sees only whether you are present.
- "Facing the screen" on (with any of the above): your teacher also sees whether you face the
  screen now, the share of the last 5 minutes you faced it, and how long you have been looking
  away; the numbers of frames facing the screen are kept per short time period like the rest.
  When it is off, head orientation is not read at all.
- Administrators of this school's ClassPulse can export session reports; every view of
  per-student data and every export is recorded in an audit log.
- You see on your own page exactly what your teacher currently sees about you.

Your choices
- Joining is voluntary. You can decline and still attend without any analysis, turn the camera
  off at any time, and withdraw at any time: analysis stops at once and your withdrawal is
  recorded.
- Estimates of expressions are often wrong, and an expression is not a feeling. They must not
  be used to grade or judge you.

Legal note
Under the EU Artificial Intelligence Act (Regulation (EU) 2024/1689, Article 5(1)(f), applicable
since 2 February 2025), systems that infer the emotions of people in education institutions are
prohibited in the EU, except where they are intended for medical or safety reasons. In the EU
this service may therefore only run with emotion inference switched off or for such a reason.
"""
