"""Quality-of-service profiles shared by the BronchoNav nodes.

- :data:`LATCHED`: reliable, transient-local, depth 1 — for data that changes rarely (map markers,
  the planned route, the registration result) so that late subscribers such as RViz receive the
  last message.
- :data:`STATE`: reliable, keep-last 1 — for publishing high-rate state (joint states, tip pose,
  EM pose). Keep-last 1 means the writer overwrites an unacknowledged sample instead of waiting,
  so a slow subscriber never blocks the simulation loop; reliable keeps it compatible with
  subscribers that ask for reliable delivery (robot_state_publisher, RViz, Foxglove bridge).
- :data:`STATE_SUB`: best-effort, keep-last 1 — for subscribing to high-rate state: only the
  newest sample matters (matches both reliable and best-effort publishers).
- :data:`SAMPLES`: best-effort, keep-last 100 — for subscribing to a stream in which every
  sample counts (EM samples for the registration): a burst waits in the queue instead of
  overwriting the sample before it.
- :data:`COMMAND`: reliable, keep-last 1 — for controller commands: only the newest counts (the
  simulator counts the ones a newer command overwrote before it read them from the gaps in the
  sender's sequence numbers).
- :data:`DEFAULT`: reliable, keep-last 10 (the ROS default) for status and diagnostics.
"""

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

LATCHED = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
STATE = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                   reliability=ReliabilityPolicy.RELIABLE,
                   durability=DurabilityPolicy.VOLATILE)
STATE_SUB = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                       reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)
SAMPLES = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.BEST_EFFORT,
                     durability=DurabilityPolicy.VOLATILE)
COMMAND = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
DEFAULT = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
