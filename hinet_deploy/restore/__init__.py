"""`hinet-deploy restore`: one planner (`plan`) decides what each input becomes, for local paths and
filesystem URIs alike; two runners carry a plan out, `local` in this process and `cluster` on Ray.
The runners share the planner, the per-file steps (`files`) and the report (`report`), and never
import each other.
"""
