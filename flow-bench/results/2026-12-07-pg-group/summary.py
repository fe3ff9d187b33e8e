# Summarises run.sh / w5.sh output: one line per measurement, steps per second (W6) or the JSON line.
import sys, json
rows=[]; n=None
for line in open(sys.argv[1]):
    label, _, rest = line.strip().partition(' ')
    if label=='uptime': print(rest.strip()); continue
    try: d=json.loads(rest)
    except Exception: print(label, 'FAILED', rest[:100]); continue
    print(f"{label:15} workers={d['workers']} steps/s={d['steps_per_s']:.0f}")
