"""Jobs composed of every layer below: a study (train single and paired, evaluate, sweep, report), the
real-data suite with its baselines and site shift, the embedded demo, and the model check a user runs
before spending GPU hours."""
