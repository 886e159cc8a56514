#!/usr/bin/env python3
"""Draws docs/drawn-4.png: a 4 as a person draws one on a 300x300 white page with a thick pen,
three strokes, black ink, slightly off-centre and slanted, so that `mnist predict` has to
invert, crop, scale and centre it. Needs Pillow (Debian: python3-pil).

    python3 docs/draw_digit.py && build/mnist predict --show --model CKPT docs/drawn-4.png
"""
from pathlib import Path

from PIL import Image, ImageDraw

page = Image.new("L", (300, 300), 255)
pen = ImageDraw.Draw(page)
for stroke in (
    [(170, 45), (120, 120), (78, 185)],   # the slanted left side
    [(78, 185), (160, 182), (238, 176)],  # the bar
    [(196, 70), (192, 170), (186, 265)],  # the downstroke
):
    pen.line(stroke, fill=0, width=22, joint="curve")
    for x, y in (stroke[0], stroke[-1]):  # round pen ends
        pen.ellipse((x - 11, y - 11, x + 11, y + 11), fill=0)
page.save(Path(__file__).with_name("drawn-4.png"))
